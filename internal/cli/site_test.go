package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-auth/outpost/internal/proctest"
	"github.com/outpost-auth/outpost/internal/sqlitedb"
)

// siteFixture is a server data directory, its exported public key, and the
// flags that send 'outpost admin site' to it: the API of a running server
// (newSiteServer) or the directory itself (--data, newSiteFixture).
type siteFixture struct {
	dir, data, pub      string
	masterPass, pkgPass string
	env                 []string
	// mode is appended to every admin command: the API's auth flags, or --data DIR.
	mode []string
}

// newSiteFixture makes a data directory for the local (--data) mode; sealed
// costs an argon2id run at the default cost for every command, so only the
// tests that need a sealed master key ask for one.
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
	f.mode = []string{"--data", f.data}
	return f
}

// startServeOn runs 'outpost serve' on the existing data directory data, on
// a fresh plaintext loopback port, and returns its URL.
func startServeOn(t *testing.T, data string) string {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	srv := exec.Command(outpostBin, "serve", "--data", data, "--listen", "127.0.0.1:0", "--plaintext", "--dev-insecure-unsealed", "--ready-file", ready)
	return proctest.Start(t, srv).WaitFile(t, ready)
}

// newSiteServer is newSiteFixture(false) with a server running on it; the
// admin commands go to its API.
func newSiteServer(t *testing.T) siteFixture {
	t.Helper()
	f := newSiteFixture(t, false)
	url := startServeOn(t, f.data)
	f.env = append(f.env, "OUTPOST_SERVER="+url)
	f.mode = []string{"--token-file", filepath.Join(f.data, "admin.token")}
	return f
}

// admin runs 'outpost admin ARGS' in f's mode and expects exit code.
func (f siteFixture) admin(t *testing.T, code int, args ...string) runResult {
	t.Helper()
	return expectCode(t, code, f.env, append(append([]string{"admin"}, args...), f.mode...)...)
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
	r := f.admin(t, 0, append([]string{"site", "credential", "--scope", "north", "--tech", tech, "--json"}, extra...)...)
	var out struct {
		URI   string `json:"otpauth_uri"`
		Epoch uint32 `json:"epoch"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || !strings.HasPrefix(out.URI, "otpauth://totp/") {
		t.Fatalf("credential output: %s", r)
	}
	return out.URI
}

// TestSiteCommandsEndToEnd: provision, install, credentials, revocation
// and an emergency roll through the server's API, checked at a real site.
// It is long on purpose: one story whose steps depend on the ones before.
func TestSiteCommandsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	f := newSiteServer(t)
	pkg := filepath.Join(f.dir, "cab-17.pkg")
	sdir := filepath.Join(f.dir, "site")

	r := f.admin(t, 0, "site", "provision", "--scope", "north", "--site", "cab-17", "--out", pkg, "--passphrase-file", f.pkgPass, "--json")
	var prov struct {
		Serial  uint64 `json:"serial"`
		Bytes   int    `json:"bytes"`
		Package string `json:"package"`
		Epochs  []struct {
			N uint32 `json:"n"`
		} `json:"epochs"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &prov); err != nil || prov.Serial != 1 || len(prov.Epochs) != 2 || prov.Bytes < 1000 || prov.Package != "" {
		t.Fatalf("provision: %s", r)
	}
	// Never overwritten.
	f.admin(t, 1, "site", "provision", "--scope", "north", "--site", "cab-17", "--out", pkg, "--passphrase-file", f.pkgPass)

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
	const usbPass = "usb drive passphrase"
	keyPass := writeFile(t, f.dir, "key.pass", usbPass+"\n")
	keyFile := filepath.Join(f.dir, "tech-042.key")
	r = f.admin(t, 0, "site", "credential", "--scope", "north", "--tech", "tech-042", "--key-file", keyFile, "--export-passphrase-file", keyPass)
	notLeaked(t, r, usbPass)
	r = mustRun(t, nil, "keys", "inspect", keyFile, "--passphrase-file", keyPass, "--show-secret", "--json")
	var ins struct {
		URI     string `json:"otpauth_uri"`
		Purpose string `json:"purpose"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &ins); err != nil || ins.URI != uri || ins.Purpose != "technician-seed" {
		t.Fatalf("key file gives %q, credential gave %q: %s", ins.URI, uri, r)
	}
	r = f.admin(t, 0, "site", "credential", "--scope", "north", "--tech", "tech-042", "--qr")
	if !strings.Contains(r.stdout, uri) || !strings.ContainsAny(r.stdout, "█▀▄") {
		t.Fatalf("--qr: %s", r)
	}

	// Revocation by file; the same list again is refused.
	list := filepath.Join(f.dir, "north.rev")
	f.admin(t, 0, "site", "revoke", "--scope", "north", "--tech", "tech-7", "--reason", "lost phone", "--out", list)
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
	r = f.admin(t, 1, "site", "credential", "--scope", "north", "--tech", "tech-7")
	if !strings.Contains(r.stderr, "revoked") {
		t.Fatalf("%s", r)
	}
	r = f.admin(t, 1, "site", "credential", "--scope", "north", "--tech", "tech-7", "--json")
	if !strings.Contains(r.stdout, `"code": "revoked"`) {
		t.Fatalf("--json refusal: %s", r)
	}

	// Emergency roll: the site keeps its old keys until it gets a new package.
	oldURI := credentialURI(t, f, "tech-5")
	f.admin(t, 0, "site", "roll", "--scope", "north")
	pkg2 := filepath.Join(f.dir, "cab-17-2.pkg")
	f.admin(t, 0, "site", "provision", "--scope", "north", "--site", "cab-17", "--out", pkg2, "--passphrase-file", f.pkgPass)
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

	// The scope, through the API.
	r = f.admin(t, 0, "site", "scope", "--scope", "north", "--json")
	var sc struct {
		PackageSerial uint64      `json:"package_serial"`
		Sites         []string    `json:"sites"`
		Rolls         []time.Time `json:"emergency_rolls"`
		Revoked       []struct {
			Tech string `json:"tech"`
		} `json:"revoked"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sc); err != nil || sc.PackageSerial != 2 || len(sc.Sites) != 1 || len(sc.Rolls) != 1 ||
		len(sc.Revoked) != 1 || sc.Revoked[0].Tech != "tech-7" {
		t.Fatalf("scope: %s", r)
	}

	// The site's log verifies and holds every decision.
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

	// A subject key, exported by the server and, air-gapped, from its data
	// directory: the same key, and both in the server's audit log.
	exportPass := writeFile(t, f.dir, "export.pass", "subject key file passphrase\n")
	var fps []string
	for i, mode := range [][]string{f.mode, {"--data", f.data}} {
		out := filepath.Join(f.dir, fmt.Sprintf("subject-%d.key", i))
		r := expectCode(t, 0, f.env, append([]string{"keys", "export", "--subject", "tech-042", "--epoch", "2", "--out", out,
			"--export-passphrase-file", exportPass, "--json"}, mode...)...)
		var x struct {
			Fingerprint string `json:"fingerprint"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &x); err != nil || x.Fingerprint == "" {
			t.Fatalf("keys export: %s", r)
		}
		fps = append(fps, x.Fingerprint)
	}
	if fps[0] != fps[1] {
		t.Fatalf("the API and the local mode exported different keys: %v", fps)
	}
	r = f.admin(t, 0, "audit", "list", "--limit", "1000", "--json")
	var al struct {
		Entries []struct{ Kind, Actor, Subject string } `json:"entries"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &al); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	local := 0
	for _, e := range al.Entries {
		count[e.Kind]++
		if strings.HasPrefix(e.Actor, "local") {
			local++
		}
	}
	if count["site.provision"] != 2 || count["site.credential"] != 6 || count["site.revoke"] != 1 || count["site.roll"] != 1 ||
		count["key.export"] != 2 || local != 1 {
		t.Fatalf("audit kinds %v, %d local entries", count, local)
	}
	mustRun(t, nil, "audit", "verify", "--data", f.data)
}

// TestSiteScopePolicyAndPassphrases: the local (--data) mode with a sealed
// master key, where the package and key file passphrases must differ from it.
func TestSiteScopePolicyAndPassphrases(t *testing.T) {
	f := newSiteFixture(t, true)
	// The package and key file passphrases must not be the master key's.
	r := f.admin(t, 2, "site", "provision", "--scope", "north", "--site", "cab-17", "--out", filepath.Join(f.dir, "x.pkg"), "--passphrase-file", f.masterPass)
	if !strings.Contains(r.stderr, "master key's passphrase") {
		t.Fatalf("%s", r)
	}
	f.admin(t, 2, "site", "credential", "--scope", "north", "--tech", "t", "--key-file", filepath.Join(f.dir, "t.key"), "--export-passphrase-file", f.masterPass)
	wrong := writeFile(t, f.dir, "wrong.pass", "wrong master passphrase\n")
	expectCode(t, 3, nil, "admin", "site", "scope", "--data", f.data, "--scope", "north", "--passphrase-file", wrong)

	f.admin(t, 1, "site", "scope", "--scope", "north")
	r = f.admin(t, 0, "site", "scope", "--scope", "north", "--digits", "8", "--lockout", "1h", "--json")
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
	r = f.admin(t, 0, "site", "scope", "--scope", "north", "--window", "2", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &sc); err != nil || sc.Policy.Digits != 8 || sc.Policy.LockoutS != 3600 || sc.Policy.Window != 2 {
		t.Fatalf("scope: %s", r)
	}
	uri := credentialURI(t, f, "tech-1")
	if !strings.Contains(uri, "digits=8") {
		t.Fatalf("uri %s", uri)
	}
	f.admin(t, 1, "site", "scope", "--scope", "north", "--digits", "6")
	f.admin(t, 1, "site", "scope", "--scope", "north", "--window", "50")
	f.admin(t, 2, "site", "scope", "--scope", "north", "--delay", "1500ms")
	f.admin(t, 2, "site", "credential", "--scope", "north", "--tech", "t", "--epoch", "soon")
	// The local mode and the API are exclusive.
	f.admin(t, 2, "site", "scope", "--scope", "north", "--server", "http://127.0.0.1:1")
	expectCode(t, 2, nil, "admin", "site", "scope", "--scope", "north", "--database", "x.db")
	// Every change went to the server's audit log, in its database.
	r = mustRun(t, nil, "audit", "verify", "--data", f.data, "--json")
	if !strings.Contains(r.stdout, `"entries": 3`) {
		t.Fatalf("audit: %s", r)
	}
}

// TestSiteMigrate: the sites.db of an earlier version (made by the issuer of
// commit 9a8baeb, internal/siteissue/testdata/legacy) is imported once, by
// 'admin site migrate', by the --data mode, or when 'serve' starts.
func TestSiteMigrate(t *testing.T) {
	legacy, err := os.ReadFile(filepath.Join("..", "siteissue", "testdata", "legacy", "sites.db"))
	if err != nil {
		t.Fatal(err)
	}
	withLegacy := func() siteFixture {
		f := newSiteFixture(t, false)
		writeFile(t, f.data, "sites.db", string(legacy))
		return f
	}
	renamed := func(f siteFixture) {
		t.Helper()
		if _, err := os.Stat(filepath.Join(f.data, "sites.db")); !os.IsNotExist(err) {
			t.Fatalf("sites.db is still there: %v", err)
		}
		if _, err := os.Stat(filepath.Join(f.data, "sites.db.migrated")); err != nil {
			t.Fatal(err)
		}
	}
	scopeSerial := func(r runResult) uint64 {
		t.Helper()
		var sc struct {
			PackageSerial uint64 `json:"package_serial"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &sc); err != nil {
			t.Fatalf("scope: %v\n%s", err, r)
		}
		return sc.PackageSerial
	}

	// The command, twice.
	f := withLegacy()
	r := mustRun(t, nil, "admin", "site", "migrate", "--data", f.data)
	if !strings.Contains(r.stdout, "Imported") || !strings.Contains(r.stdout, "[north south]") {
		t.Fatalf("migrate: %s", r)
	}
	renamed(f)
	r = mustRun(t, nil, "admin", "site", "migrate", "--data", f.data, "--json")
	if !strings.Contains(r.stdout, `"found": false`) {
		t.Fatalf("second migrate: %s", r)
	}
	if s := scopeSerial(f.admin(t, 0, "site", "scope", "--scope", "north", "--json")); s != 3 {
		t.Fatalf("package serial %d after the migration, want 3", s)
	}
	mustRun(t, nil, "audit", "verify", "--data", f.data)

	// The --data mode imports it first.
	f = withLegacy()
	r = f.admin(t, 0, "site", "scope", "--scope", "north", "--json")
	if !strings.Contains(r.stderr, "Imported") || scopeSerial(r) != 3 {
		t.Fatalf("--data mode: %s", r)
	}
	renamed(f)

	// So does serve.
	if testing.Short() {
		return
	}
	f = withLegacy()
	url := startServeOn(t, f.data)
	renamed(f)
	auth := []string{"--server", url, "--token-file", filepath.Join(f.data, "admin.token")}
	r = mustRun(t, nil, append([]string{"admin", "site", "scope", "--scope", "north", "--json"}, auth...)...)
	if scopeSerial(r) != 3 {
		t.Fatalf("after serve: %s", r)
	}
	r = mustRun(t, nil, append([]string{"admin", "audit", "list", "--json"}, auth...)...)
	if !strings.Contains(r.stdout, `"kind": "site.migrate"`) || !strings.Contains(r.stdout, `"actor": "serve"`) {
		t.Fatalf("audit after serve: %s", r)
	}
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
