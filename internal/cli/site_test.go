package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/sqlitedb"
)

// siteFixture is a sealed server data directory and its exported public key.
type siteFixture struct {
	dir, data, server, pub string
	masterPass, pkgPass    string
	env                    []string
}

// newSiteFixture makes the data directory; sealed costs an argon2id run at
// the default cost for every command, so only the tests that need a sealed
// master key ask for one.
func newSiteFixture(t *testing.T, sealed bool) siteFixture {
	t.Helper()
	dir := t.TempDir()
	f := siteFixture{dir: dir, data: filepath.Join(dir, "srv"), pub: filepath.Join(dir, "server.pub"),
		masterPass: writeFile(t, dir, "master.pass", masterPass+"\n"),
		pkgPass:    writeFile(t, dir, "pkg.pass", "site package passphrase\n")}
	f.env = []string{"OUTPOST_PASSPHRASE=" + masterPass}
	if sealed {
		mustRun(t, nil, "init", "--data", f.data, "--passphrase-file", f.masterPass)
	} else {
		mustRun(t, nil, "init", "--data", f.data, "--dev-insecure-unsealed")
	}
	mustRun(t, f.env, "keys", "export-public", "--data", f.data, "--out", f.pub)
	return f
}

// waitForFreshStep sleeps into a new TOTP step when the current one is
// about to end, so that a code read now is still current when checked.
func waitForFreshStep() {
	if s := time.Now().Unix() % 30; s > 25 {
		time.Sleep(time.Duration(31-s) * time.Second)
	}
}

func credentialURI(t *testing.T, f siteFixture, tech string, extra ...string) string {
	t.Helper()
	r := mustRun(t, f.env, append([]string{"admin", "site", "credential", "--data", f.data, "--scope", "north", "--tech", tech, "--json"}, extra...)...)
	var out struct {
		URI   string `json:"otpauth_uri"`
		Epoch uint32 `json:"epoch"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || !strings.HasPrefix(out.URI, "otpauth://totp/") {
		t.Fatalf("credential output: %s", r)
	}
	return out.URI
}

func TestSiteCommandsEndToEnd(t *testing.T) {
	f := newSiteFixture(t, false)
	pkg := filepath.Join(f.dir, "cab-17.pkg")
	sdir := filepath.Join(f.dir, "site")

	r := mustRun(t, f.env, "admin", "site", "provision", "--data", f.data, "--scope", "north", "--site", "cab-17",
		"--out", pkg, "--passphrase-file", f.pkgPass, "--json")
	var prov struct {
		Serial uint64 `json:"serial"`
		Bytes  int    `json:"bytes"`
		Epochs []struct {
			N uint32 `json:"n"`
		} `json:"epochs"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &prov); err != nil || prov.Serial != 1 || len(prov.Epochs) != 2 || prov.Bytes < 1000 {
		t.Fatalf("provision: %s", r)
	}
	// Never overwritten.
	expectCode(t, 1, f.env, "admin", "site", "provision", "--data", f.data, "--scope", "north", "--site", "cab-17",
		"--out", pkg, "--passphrase-file", f.pkgPass)

	// Bad installs leave nothing behind.
	wrongPass := writeFile(t, f.dir, "wrong.pass", "not the passphrase\n")
	for _, tc := range []struct {
		code int
		args []string
	}{
		{3, []string{"--site", "cab-18", "--passphrase-file", f.pkgPass}}, // bound to another site: refused, as a bundle for another device is
		{3, []string{"--site", "cab-17", "--passphrase-file", wrongPass}},
		{2, []string{"--site", "bad/id", "--passphrase-file", f.pkgPass}},
	} {
		r := expectCode(t, tc.code, nil, append(append([]string{"site", "init", "--data", sdir, "--server-key", f.pub}, tc.args...), pkg)...)
		if _, err := os.Stat(sdir); !os.IsNotExist(err) {
			t.Fatalf("refused init left %s: %s", sdir, r)
		}
	}
	r = mustRun(t, nil, "site", "init", "--data", sdir, "--site", "cab-17", "--server-key", f.pub, "--passphrase-file", f.pkgPass, "--json", pkg)
	var st struct {
		Scope     string `json:"scope"`
		DeviceKey string `json:"device_key"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Scope != "north" || !kidRE.MatchString(st.DeviceKey) {
		t.Fatalf("site init: %s", r)
	}

	// A technician created after provisioning.
	waitForFreshStep()
	uri := credentialURI(t, f, "tech-042")
	code := uriCodeNow(t, uri)
	r = mustRun(t, nil, "site", "verify", "--data", sdir, "--tech", "tech-042", "--code", code)
	if !strings.HasPrefix(r.stdout, "accepted: tech-042") {
		t.Fatalf("%s", r)
	}
	r = expectCode(t, 3, nil, "site", "verify", "--data", sdir, "--tech", "tech-042", "--code", code, "--json")
	var dec struct {
		OK     bool   `json:"ok"`
		Reason string `json:"reason"`
		Error  string `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &dec); err != nil || dec.OK || dec.Reason != "replayed" || dec.Error == "" {
		t.Fatalf("replay: %s", r)
	}
	notLeaked(t, r, code)
	r = expectCode(t, 3, nil, "site", "verify", "--data", sdir, "--tech", "tech-9", "--code", "12345")
	if !strings.Contains(r.stderr, "exactly 6 digits") {
		t.Fatalf("%s", r)
	}
	expectCode(t, 4, nil, "site", "verify", "--data", sdir, "--tech", "tech-9", "--code", "123456") // inside the 2 s delay
	expectCode(t, 2, nil, "site", "verify", "--data", sdir, "--tech", "has space", "--code", "123456")

	// The code from standard input.
	uri7 := credentialURI(t, f, "tech-7")
	cmd := exec.Command(outpostBin, "site", "verify", "--data", sdir, "--tech", "tech-7", "--code", "-")
	cmd.Stdin = strings.NewReader(uriCodeNow(t, uri7) + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("--code -: %v\n%s", err, out)
	}

	// A key file opens with 'outpost keys inspect' to the same credential.
	keyPass := writeFile(t, f.dir, "key.pass", "usb drive passphrase\n")
	keyFile := filepath.Join(f.dir, "tech-042.key")
	mustRun(t, f.env, "admin", "site", "credential", "--data", f.data, "--scope", "north", "--tech", "tech-042",
		"--key-file", keyFile, "--export-passphrase-file", keyPass)
	r = mustRun(t, nil, "keys", "inspect", keyFile, "--passphrase-file", keyPass, "--show-secret", "--json")
	var ins struct {
		URI     string `json:"otpauth_uri"`
		Purpose string `json:"purpose"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &ins); err != nil || ins.URI != uri || ins.Purpose != "technician-seed" {
		t.Fatalf("key file gives %q, credential gave %q: %s", ins.URI, uri, r)
	}
	r = mustRun(t, f.env, "admin", "site", "credential", "--data", f.data, "--scope", "north", "--tech", "tech-042", "--qr")
	if !strings.Contains(r.stdout, uri) || !strings.ContainsAny(r.stdout, "█▀▄") {
		t.Fatalf("--qr: %s", r)
	}

	// Revocation by file; the same list again is refused.
	list := filepath.Join(f.dir, "north.rev")
	mustRun(t, f.env, "admin", "site", "revoke", "--data", f.data, "--scope", "north", "--tech", "tech-7", "--out", list)
	mustRun(t, nil, "site", "update", "--data", sdir, list)
	r = expectCode(t, 1, nil, "site", "update", "--data", sdir, list)
	if !strings.Contains(r.stderr, "already installed") {
		t.Fatalf("%s", r)
	}
	waitForFreshStep()
	r = expectCode(t, 3, nil, "site", "verify", "--data", sdir, "--tech", "tech-7", "--code", uriCodeNow(t, uri7))
	if !strings.Contains(r.stderr, "revocation list") {
		t.Fatalf("%s", r)
	}
	expectCode(t, 1, f.env, "admin", "site", "credential", "--data", f.data, "--scope", "north", "--tech", "tech-7")

	// Emergency roll: the site keeps its old keys until it gets a new package.
	oldURI := credentialURI(t, f, "tech-5")
	mustRun(t, f.env, "admin", "site", "roll", "--data", f.data, "--scope", "north")
	pkg2 := filepath.Join(f.dir, "cab-17-2.pkg")
	mustRun(t, f.env, "admin", "site", "provision", "--data", f.data, "--scope", "north", "--site", "cab-17",
		"--out", pkg2, "--passphrase-file", f.pkgPass)
	mustRun(t, nil, "site", "update", "--data", sdir, "--passphrase-file", f.pkgPass, pkg2)
	expectCode(t, 1, nil, "site", "update", "--data", sdir, "--passphrase-file", f.pkgPass, pkg) // older package
	waitForFreshStep()
	newURI := credentialURI(t, f, "tech-5")
	if newURI == oldURI {
		t.Fatal("the roll did not change the credential")
	}
	expectCode(t, 3, nil, "site", "verify", "--data", sdir, "--tech", "tech-5", "--code", uriCodeNow(t, oldURI))
	time.Sleep(2100 * time.Millisecond) // the delay after a failed code
	mustRun(t, nil, "site", "verify", "--data", sdir, "--tech", "tech-5", "--code", uriCodeNow(t, newURI))

	// The log verifies and holds every decision.
	r = mustRun(t, nil, "site", "log", "--data", sdir, "--json")
	var lg struct {
		Verified bool `json:"verified"`
		Entries  []struct {
			Kind string `json:"kind"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &lg); err != nil || !lg.Verified || len(lg.Entries) != 11 {
		t.Fatalf("log: %s", r)
	}
	mustRun(t, nil, "site", "status", "--data", sdir)

	// Tampering with the log in the database file is caught (exit 5).
	db, err := sqlitedb.Open(filepath.Join(sdir, "site.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DROP TRIGGER device_log_no_update`, `UPDATE device_log SET subject = 'someone-else' WHERE seq = 3`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	r = expectCode(t, 5, nil, "site", "log", "--data", sdir)
	if !strings.Contains(r.stderr, "entry 3") {
		t.Fatalf("%s", r)
	}
}

func TestSiteScopePolicyAndPassphrases(t *testing.T) {
	f := newSiteFixture(t, true)
	// The package and key file passphrases must not be the master key's.
	r := expectCode(t, 2, f.env, "admin", "site", "provision", "--data", f.data, "--scope", "north", "--site", "cab-17",
		"--out", filepath.Join(f.dir, "x.pkg"), "--passphrase-file", f.masterPass)
	if !strings.Contains(r.stderr, "master key's passphrase") {
		t.Fatalf("%s", r)
	}
	expectCode(t, 2, f.env, "admin", "site", "credential", "--data", f.data, "--scope", "north", "--tech", "t",
		"--key-file", filepath.Join(f.dir, "t.key"), "--export-passphrase-file", f.masterPass)
	wrong := writeFile(t, f.dir, "wrong.pass", "wrong master passphrase\n")
	expectCode(t, 3, nil, "admin", "site", "scope", "--data", f.data, "--scope", "north", "--passphrase-file", wrong)

	expectCode(t, 1, f.env, "admin", "site", "scope", "--data", f.data, "--scope", "north")
	r = mustRun(t, f.env, "admin", "site", "scope", "--data", f.data, "--scope", "north", "--digits", "8", "--lockout", "1h", "--json")
	var sc struct {
		Policy struct {
			Digits   int   `json:"digits"`
			LockoutS int64 `json:"lockout_s"`
			Window   int   `json:"window"`
		} `json:"policy"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sc); err != nil || sc.Policy.Digits != 8 || sc.Policy.LockoutS != 3600 || sc.Policy.Window != 1 {
		t.Fatalf("scope: %s", r)
	}
	// Other values keep theirs when one changes.
	r = mustRun(t, f.env, "admin", "site", "scope", "--data", f.data, "--scope", "north", "--window", "2", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &sc); err != nil || sc.Policy.Digits != 8 || sc.Policy.LockoutS != 3600 || sc.Policy.Window != 2 {
		t.Fatalf("scope: %s", r)
	}
	uri := credentialURI(t, f, "tech-1")
	if !strings.Contains(uri, "digits=8") {
		t.Fatalf("uri %s", uri)
	}
	expectCode(t, 1, f.env, "admin", "site", "scope", "--data", f.data, "--scope", "north", "--digits", "6")
	expectCode(t, 1, f.env, "admin", "site", "scope", "--data", f.data, "--scope", "north", "--window", "50")
	expectCode(t, 2, f.env, "admin", "site", "credential", "--data", f.data, "--scope", "north", "--tech", "t", "--epoch", "soon")
}

func TestBenchSite(t *testing.T) {
	r := mustRun(t, nil, "bench", "site", "--duration", "50ms", "--technicians", "10,2000", "--revoked", "20", "--json")
	var rep struct {
		Rows []struct {
			Name   string  `json:"name"`
			PerSec float64 `json:"per_sec"`
			VsRaw  float64 `json:"vs_raw"`
		} `json:"throughput"`
		Sizes []struct {
			Technicians int  `json:"technicians"`
			Revoked     int  `json:"revoked"`
			Bytes       int  `json:"package_bytes"`
			Checked     bool `json:"checked"`
		} `json:"package_sizes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || len(rep.Rows) != 4 || len(rep.Sizes) != 3 {
		t.Fatalf("bench site: %s", r)
	}
	if rep.Rows[0].VsRaw != 1 || rep.Rows[2].PerSec <= 0 {
		t.Fatalf("rows %+v", rep.Rows)
	}
	s := rep.Sizes
	if s[0].Bytes != s[1].Bytes || s[2].Bytes <= s[1].Bytes || !s[0].Checked || !s[1].Checked || !s[2].Checked {
		t.Fatalf("package sizes must not grow with technicians, only with revocations: %+v", s)
	}
	r = mustRun(t, nil, "bench", "site", "--duration", "20ms", "--technicians", "5", "--revoked", "0")
	for _, want := range []string{"ops/s/core", "raw otp.Params.Verify", "derive + verify", "target >= 200000", "package bytes"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("table lacks %q:\n%s", want, r.stdout)
		}
	}
	expectCode(t, 2, nil, "bench", "site", "--duration", "0s")
}
