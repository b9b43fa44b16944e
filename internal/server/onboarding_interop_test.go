package server

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needTool returns the path of a real client, skipping the test when it is
// missing (failing with OUTPOST_REQUIRE_INTEROP=1, as in .ci/run).
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s is not installed: apt-get install %s", name, name)
		if os.Getenv("OUTPOST_REQUIRE_INTEROP") == "1" {
			t.Fatal(msg + " (OUTPOST_REQUIRE_INTEROP=1)")
		}
		t.Skip(msg + "; set OUTPOST_REQUIRE_INTEROP=1 to make this a failure")
	}
	return p
}

// TestOnboardingWithOpenSSLAndCurl enrols a device with plain openssl req
// and curl over EST, reads the answer with openssl pkcs7, verifies the
// chain with openssl verify, calls a mutual-TLS endpoint with curl --cert,
// and checks that curl without a certificate, with an expired, a revoked
// or another CA's certificate, and openssl s_client without a certificate
// are refused.
//
// The server's clock here is the system clock, read once: openssl and
// curl check certificates against it and take no other. The test does
// not depend on the date it runs on.
func TestOnboardingWithOpenSSLAndCurl(t *testing.T) {
	openssl, curl := needTool(t, "openssl"), needTool(t, "curl")
	// A grace of 20 minutes: a CA made now cannot have issued a
	// certificate that expired longer ago than an hour.
	o := newOnboardFixture(t, &fakeClock{t: time.Now()}, true, func(c *Config) { c.DeviceGrace = 20 * time.Minute })
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	write := func(name string, b []byte) {
		if err := os.WriteFile(path(name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func(bin string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(bin string, args ...string) string {
		t.Helper()
		out, err := run(bin, args...)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
		}
		return out
	}
	write("root.pem", o.rootPE)
	key := o.roster.vouch(t, "SN-CURL")
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	write("device.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	base := o.device

	// The one-time token, then a CSR carrying it as its challengePassword.
	var ch struct{ Nonce string }
	if err := json.Unmarshal([]byte(must(curl, "-sS", "--fail-with-body", "--cacert", "root.pem", "-H", "Content-Type: application/json",
		"-d", `{"serial":"SN-CURL"}`, base+"/v1/enrol/challenge")), &ch); err != nil || ch.Nonce == "" {
		t.Fatalf("challenge: %v", err)
	}
	write("req.cnf", []byte("[req]\nprompt = no\ndistinguished_name = dn\nattributes = attrs\n[dn]\nCN = SN-CURL\n[attrs]\nchallengePassword = "+ch.Nonce+"\n"))
	must(openssl, "req", "-new", "-key", "device.key", "-config", "req.cnf", "-outform", "DER", "-out", "req.der")
	must(openssl, "base64", "-in", "req.der", "-out", "req.b64")
	must(curl, "-sS", "--fail-with-body", "--cacert", "root.pem", "-H", "Content-Type: application/pkcs10", "--data-binary", "@req.b64",
		"-o", "cert.p7.b64", base+"/.well-known/est/simpleenroll")
	must(openssl, "base64", "-d", "-in", "cert.p7.b64", "-out", "cert.p7")
	must(openssl, "pkcs7", "-inform", "DER", "-in", "cert.p7", "-print_certs", "-out", "device.pem")
	must(curl, "-sS", "--fail-with-body", "--cacert", "root.pem", "-o", "cacerts.p7.b64", base+"/.well-known/est/cacerts")
	must(openssl, "base64", "-d", "-in", "cacerts.p7.b64", "-out", "cacerts.p7")
	must(openssl, "pkcs7", "-inform", "DER", "-in", "cacerts.p7", "-print_certs", "-out", "cacerts.pem")
	// With an RFC 7030 label (the realm), the same CA certificates.
	if labelled := must(curl, "-sS", "--fail-with-body", "--cacert", "root.pem", base+"/.well-known/est/default/cacerts"); labelled != string(readTest(t, path("cacerts.p7.b64"))) {
		t.Errorf("labelled cacerts differ: %s", labelled)
	}
	if out := must(openssl, "verify", "-CAfile", "root.pem", "-untrusted", "cacerts.pem", "-purpose", "sslclient", "device.pem"); !strings.Contains(out, "device.pem: OK") {
		t.Fatalf("openssl verify: %s", out)
	}
	if out := must(openssl, "x509", "-in", "device.pem", "-noout", "-ext", "subjectAltName,extendedKeyUsage,basicConstraints"); !strings.Contains(out, "URI:urn:outpost:device:default:SN-CURL") ||
		!strings.Contains(out, "TLS Web Client Authentication") || strings.Contains(out, "Server") {
		t.Fatalf("certificate extensions: %s", out)
	}
	// The token is single-use: the same CSR again is refused.
	if out, _ := run(curl, "-sS", "--cacert", "root.pem", "-H", "Content-Type: application/pkcs10", "--data-binary", "@req.b64",
		base+"/.well-known/est/simpleenroll"); !strings.Contains(out, "invalid_challenge") {
		t.Fatalf("replayed EST request: %s", out)
	}

	// Mutual TLS with curl --cert.
	whoami := base + "/v1/device/whoami"
	if out := must(curl, "-sS", "--fail-with-body", "--cacert", "root.pem", "--cert", "device.pem", "--key", "device.key", whoami); !strings.Contains(out, `"serial":"SN-CURL"`) {
		t.Fatalf("whoami: %s", out)
	}
	// EST re-enrolment over mutual TLS with the same key.
	must(curl, "-sS", "--fail-with-body", "--cacert", "root.pem", "--cert", "device.pem", "--key", "device.key",
		"-H", "Content-Type: application/pkcs10", "--data-binary", "@req.b64", "-o", "renewed.p7.b64", base+"/.well-known/est/simplereenroll")

	refused := func(what string, want string, args ...string) {
		t.Helper()
		out, err := run(curl, append([]string{"-sS", "--cacert", "root.pem", "-w", "\nHTTP %{http_code}\n"}, append(args, whoami)...)...)
		if strings.Contains(out, "HTTP 200") || (want != "" && !strings.Contains(out, want)) {
			t.Fatalf("%s: curl got through or said otherwise (want %q): %v\n%s", what, want, err, out)
		}
	}
	refused("no certificate", "no_certificate")
	if out, _ := run("sh", "-c", `printf 'GET /v1/device/whoami HTTP/1.1\r\nHost: device\r\nConnection: close\r\n\r\n' | `+openssl+
		` s_client -connect `+strings.TrimPrefix(base, "https://")+` -CAfile root.pem -verify_return_error -quiet 2>&1`); !strings.Contains(out, "401 Unauthorized") || !strings.Contains(out, "no_certificate") {
		t.Fatalf("openssl s_client without a certificate: %s", out)
	}

	issue := func(name string, notBefore, notAfter time.Time) {
		der, _, err := o.srv.onboard.ca.IssueDevice(key.Public(), "default", "SN-CURL", notBefore, notAfter)
		if err != nil {
			t.Fatal(err)
		}
		write(name, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	now := o.clock.Now()
	issue("expired.pem", now.Add(-50*time.Minute), now.Add(-10*time.Minute))
	refused("expired certificate (within the grace: renewal only)", "expired", "--cert", "expired.pem", "--key", "device.key")
	issue("long-expired.pem", now.Add(-50*time.Minute), now.Add(-40*time.Minute))
	refused("certificate expired beyond the grace (handshake)", "", "--cert", "long-expired.pem", "--key", "device.key")

	other := newOnboardFixture(t, &fakeClock{t: now}, true)
	otherDER, _, err := other.srv.onboard.ca.IssueDevice(key.Public(), "default", "SN-CURL", now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	write("other-ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: otherDER}))
	refused("another CA's certificate (handshake)", "", "--cert", "other-ca.pem", "--key", "device.key")

	o.mustCall(200, o.admin, "POST", "/v1/ca/devices/SN-CURL/revoke", map[string]string{"reason": "stolen"})
	refused("revoked device (handshake)", "", "--cert", "device.pem", "--key", "device.key")

	// Every refused certificate was audited.
	es, err := o.st.ListAudit(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]int{}
	for _, e := range es {
		if e.Kind == "device.refused" {
			var d struct{ Reason string }
			_ = json.Unmarshal(e.Data, &d)
			reasons[d.Reason]++
		}
	}
	for _, r := range []string{"challenge", "expired", "not_device", "revoked"} {
		if reasons[r] == 0 {
			t.Errorf("no refusal audited with reason %s (audited: %v)", r, reasons)
		}
	}
}

func readTest(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
