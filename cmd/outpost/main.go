// Command outpost is the single Outpost binary: server, admin, field, site and
// device roles as subcommands. All logic lives in the packages it calls; see
// `outpost --help` and the README.
package main

import (
	"os"

	"github.com/outpost-auth/outpost/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
