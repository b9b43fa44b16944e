// Package onboardbench measures device onboarding on one store ('outpost
// bench onboarding'):
//
//   - enrolments per second through the onboarding service
//     (enrol.Service): a challenge (a nonce stored), the device's proof
//     signed over it and an exporter value, the CSR checked, the nonce
//     consumed, the roster asked, the certificate signed and stored with
//     its audit entry; Config.Concurrency devices at a time. Keys and CSRs
//     are made before timing (a device makes its key once, at the factory);
//     the proof's signature is the device's work and is inside the timing
//     (about 20 µs of ECDSA P-256);
//   - TLS handshakes per second on the device listener over loopback, each
//     a new connection (no resumption) followed by one small request
//     (GET /v1/ca/root), with a device certificate (mutual TLS: the chain
//     checked and the device's status and vouch read from the store at
//     every handshake) beside the same without a client certificate
//     (server-only TLS), alternating in blocks of 16 on every worker so
//     that both kinds see the same load.
//
// The roster is an in-memory map (the real one reads the store once per
// check: add a lookup).
package onboardbench

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-auth/outpost/internal/audit"
	"github.com/outpost-auth/outpost/internal/bench"
	"github.com/outpost-auth/outpost/internal/ca"
	"github.com/outpost-auth/outpost/internal/enrol"
	"github.com/outpost-auth/outpost/internal/keys"
	"github.com/outpost-auth/outpost/internal/server"
	"github.com/outpost-auth/outpost/internal/store"
)

// Config of one run.
type Config struct {
	// DSN of the store; empty is a SQLite file in a temporary directory, a
	// PostgreSQL DSN gets a scratch schema dropped afterwards.
	DSN string
	// Enrolments to time, Concurrency at a time; Handshakes of each kind.
	Enrolments, Concurrency, Handshakes int
}

// Defaults of a run.
var Defaults = Config{Enrolments: 2000, Concurrency: 8, Handshakes: 2000}

// Result of one run.
type Result struct {
	Engine          string        `json:"engine"`
	Enrolments      int           `json:"enrolments"`
	EnrolWall       time.Duration `json:"enrol_wall_ns"`
	EnrolRate       float64       `json:"enrolments_per_second"`
	Handshakes      int           `json:"handshakes"`
	MutualRate      float64       `json:"mutual_tls_handshakes_per_second"`
	ServerOnlyRate  float64       `json:"server_tls_handshakes_per_second"`
	MutualOverOnly  float64       `json:"mutual_over_server_only"`
	Errors          int64         `json:"errors"`
	FirstError      string        `json:"first_error,omitempty"`
	firstErrorStore sync.Once
}

// roster vouches for every key it was given.
type roster struct {
	mu   sync.RWMutex
	keys map[string][]byte
}

func (r *roster) Live(_ context.Context, _, serial string, spki []byte) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if k, ok := r.keys[serial]; !ok || string(k) != string(spki) {
		return errors.New("no vouch")
	}
	return nil
}

func (r *roster) Enrolled(context.Context, string, string, []byte) error { return nil }

type device struct {
	serial string
	key    crypto.Signer
	csr    []byte
}

func (res *Result) fail(err error) {
	atomic.AddInt64(&res.Errors, 1)
	res.firstErrorStore.Do(func() { res.FirstError = err.Error() })
}

// Run runs the benchmark, saying what it does on progress.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Result, error) {
	st, done, err := bench.OpenStore(ctx, cfg.DSN, "outpost_bench_onboard")
	if err != nil {
		return nil, err
	}
	defer done()
	res := &Result{Engine: st.Engine(), Enrolments: cfg.Enrolments, Handshakes: cfg.Handshakes}
	m, err := keys.GenerateMaster()
	if err != nil {
		return nil, err
	}
	r := &roster{keys: map[string][]byte{}}
	srv, err := server.New(server.Config{Store: st, Master: m, Vouches: r, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	if _, err := srv.Bootstrap(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "%s: making %d device keys and CSRs\n", res.Engine, cfg.Enrolments+1)
	devs := make([]device, cfg.Enrolments+1)
	for i := range devs {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		serial := fmt.Sprintf("SN-%07d", i)
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: serial}}, k)
		if err != nil {
			return nil, err
		}
		spki, _ := x509.MarshalPKIXPublicKey(k.Public())
		r.keys[serial] = spki
		devs[i] = device{serial: serial, key: k, csr: csr}
	}
	// The service itself, on the CA the server made in this store.
	a, _, err := ca.LoadOrCreate(ctx, st.(store.CAStore), m, "bench", time.Now())
	if err != nil {
		return nil, err
	}
	svc := &enrol.Service{Store: st.(store.CAStore), Audit: &audit.Log{Store: st}, CA: a, Vouches: r}
	exporter := make([]byte, enrol.ExporterLen)
	_, _ = rand.Read(exporter)

	fmt.Fprintf(progress, "%s: %d enrolments, %d at a time\n", res.Engine, cfg.Enrolments, cfg.Concurrency)
	var next atomic.Int64
	start := time.Now()
	bench.Parallel(cfg.Concurrency, func(int) {
		for {
			i := int(next.Add(1)) - 1
			if i >= cfg.Enrolments {
				return
			}
			d := devs[i]
			nonce, _, err := svc.Challenge(ctx, server.DefaultRealm, d.serial)
			if err != nil {
				res.fail(err)
				continue
			}
			sig, err := enrol.SignProof(d.key, nonce, exporter)
			if err != nil {
				res.fail(err)
				continue
			}
			if _, err := svc.Enrol(ctx, enrol.Request{Realm: server.DefaultRealm, Serial: d.serial, Nonce: nonce, CSR: d.csr, Signature: sig, Exporter: exporter}); err != nil {
				res.fail(err)
			}
		}
	})
	res.EnrolWall = time.Since(start)
	res.EnrolRate = float64(cfg.Enrolments) / res.EnrolWall.Seconds()

	// The device listener, and one device with a certificate.
	last := devs[cfg.Enrolments]
	nonce, _, err := svc.Challenge(ctx, server.DefaultRealm, last.serial)
	if err != nil {
		return nil, err
	}
	sig, _ := enrol.SignProof(last.key, nonce, exporter)
	iss, err := svc.Enrol(ctx, enrol.Request{Realm: server.DefaultRealm, Serial: last.serial, Nonce: nonce, CSR: last.csr, Signature: sig, Exporter: exporter})
	if err != nil {
		return nil, err
	}
	tc, err := srv.DeviceTLSConfig([]string{"127.0.0.1"})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: srv.DeviceHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(slog.NewTextHandler(io.Discard, nil), slog.LevelWarn)}
	go hs.Serve(tls.NewListener(ln, tc))
	defer hs.Close()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(srv.CARootPEM())
	cert := tls.Certificate{Certificate: iss.Chain, PrivateKey: last.key}
	client := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	mutual := client.Clone()
	mutual.Certificates = []tls.Certificate{cert}

	// The two kinds alternate in blocks of 16 on every worker, so that both
	// see the same load (the machines are shared); each handshake is timed,
	// and a kind's rate is its count over its summed time, times the workers.
	fmt.Fprintf(progress, "%s: %d mutual-TLS and %d server-only TLS handshakes, alternating, %d at a time\n", res.Engine, cfg.Handshakes, cfg.Handshakes, cfg.Concurrency)
	var spent [2]atomic.Int64 // ns: server-only, mutual
	var count [2]atomic.Int64
	var n atomic.Int64
	bench.Parallel(cfg.Concurrency, func(int) {
		for kind := 0; n.Add(16) <= int64(2*cfg.Handshakes)+15; kind = 1 - kind {
			c := client
			if kind == 1 {
				c = mutual
			}
			for range 16 {
				t0 := time.Now()
				if err := handshake(ln.Addr().String(), c); err != nil {
					res.fail(fmt.Errorf("handshake (mutual %v): %w", kind == 1, err))
				}
				spent[kind].Add(int64(time.Since(t0)))
				count[kind].Add(1)
			}
		}
	})
	perSecond := func(k int) float64 {
		return float64(count[k].Load()) * float64(cfg.Concurrency) / time.Duration(spent[k].Load()).Seconds()
	}
	res.ServerOnlyRate, res.MutualRate = perSecond(0), perSecond(1)
	res.MutualOverOnly = res.MutualRate / res.ServerOnlyRate
	return res, nil
}

// handshake opens a connection, asks for the root (so that the server has
// checked the client certificate before the answer) and closes it.
func handshake(addr string, cfg *tls.Config) error {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /v1/ca/root HTTP/1.1\r\nHost: device\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if b, _ := pem.Decode(body); b == nil {
		return errors.New("no root in the answer")
	}
	return nil
}
