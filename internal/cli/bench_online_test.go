package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchOnlineQuick runs 'outpost bench online' small, on SQLite, with a
// list of client counts: JSON has noop, plain and verify at each count
// without errors, and the table has the new columns; a count of 0 and
// fewer users than clients are usage errors that say what to give.
func TestBenchOnlineQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark")
	}
	r := mustRun(t, nil, "bench", "online", "--users", "4", "--concurrency", "1,2", "--duration", "100ms", "--json")
	var rs []struct {
		Handler string   `json:"handler"`
		Clients int      `json:"clients"`
		Errors  int      `json:"errors"`
		Rate    float64  `json:"per_second"`
		Bytes   *float64 `json:"bytes_per_request"`
		VsPlain float64  `json:"vs_plain"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rs); err != nil || len(rs) != 6 {
		t.Fatalf("bench online --json: %v\n%s", err, r)
	}
	for i, x := range rs {
		want := []string{"noop", "plain", "verify"}[i%3]
		if x.Handler != want || x.Clients != []int{1, 2}[i/3] || x.Errors != 0 || x.Rate <= 0 || (want == "verify") != (x.VsPlain > 0) {
			t.Errorf("result %d: %+v", i, x)
		}
	}
	r = mustRun(t, nil, "bench", "online", "--users", "2", "--concurrency", "1", "--duration", "50ms")
	if !strings.Contains(r.stdout, "B/req") || !strings.Contains(r.stdout, "vs plain") || !strings.Contains(r.stdout, "B vs plain") {
		t.Errorf("table without the new columns:\n%s", r.stdout)
	}
	for _, tc := range []struct{ args, want string }{
		{"--concurrency 0", "--concurrency 1,16,128"},
		{"--users 10 --concurrency 1,16", "--users at least the highest client count"},
		{"--during-bundle --bundle-share 0", "from 0.01 to 1"},
		{"--during-bundle --bundle-share 1.5", "from 0.01 to 1"},
	} {
		if r := expectCode(t, 2, nil, append([]string{"bench", "online"}, strings.Fields(tc.args)...)...); !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: %s", tc.args, r)
		}
	}
}
