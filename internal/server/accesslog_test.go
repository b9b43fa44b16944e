package server

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseAccessLog(t *testing.T) {
	for _, c := range []struct {
		in   string
		want AccessLog
		bad  bool
	}{
		{"", AccessLog{}, false},
		{"all", AccessLog{}, false},
		{"errors", AccessLog{ErrorsOnly: true}, false},
		{"none", AccessLog{Off: true}, false},
		{"1/100", AccessLog{Every: 100}, false},
		{"1/1", AccessLog{Every: 1}, false},
		{"1/0", AccessLog{}, true},
		{"1/-3", AccessLog{}, true},
		{"2/100", AccessLog{}, true},
		{"some", AccessLog{}, true},
	} {
		got, err := ParseAccessLog(c.in)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("ParseAccessLog(%q) = %+v, %v", c.in, got, err)
		}
	}
}

// TestAccessLogSampling: the server writes the lines the policy asks for,
// failures always; counts come from a real handler chain.
func TestAccessLogSampling(t *testing.T) {
	for _, c := range []struct {
		policy       string
		ok, fail     int // requests made
		wantOK, want int // lines for successful requests, all lines
	}{
		{"all", 10, 3, 10, 13},
		{"1/5", 10, 3, 2, 5},
		{"errors", 10, 3, 0, 3},
		{"none", 10, 3, 0, 0},
	} {
		t.Run(c.policy, func(t *testing.T) {
			f := newFixture(t, filepath.Join(t.TempDir(), "o.db"))
			var buf bytes.Buffer
			al, err := ParseAccessLog(c.policy)
			if err != nil {
				t.Fatal(err)
			}
			f.srv.log = slog.New(slog.NewMultiHandler(f.srv.log.Handler(), slog.NewJSONHandler(&buf, nil))) // the secret scan reads them too
			f.srv.access = &sampler{AccessLog: al}
			h := f.srv.Handler()
			for range c.ok {
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/healthz", nil))
			}
			for range c.fail {
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/users", nil)) // no token: 401
			}
			lines := strings.Count(buf.String(), `"msg":"request"`)
			oks := strings.Count(buf.String(), `"status":200`)
			if lines != c.want || oks != c.wantOK {
				t.Fatalf("%d lines (%d for 200s), want %d (%d):\n%s", lines, oks, c.want, c.wantOK, buf.String())
			}
		})
	}
}
