package server

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestFuzzSeedsHitTheirRoutes: each checked-in FuzzHandlers seed is named
// after the route it was written for (method_path[_n]); its route byte must
// still pick that route, as routes are added to the table.
func TestFuzzSeedsHitTheirRoutes(t *testing.T) {
	fs := newFuzzServer(t)
	routes, err := fs.routes()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzHandlers")
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	byteRE := regexp.MustCompile(`(?m)^byte\('(.*)'\)$`)
	for _, e := range files {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m := byteRE.FindSubmatch(data)
		if m == nil {
			t.Errorf("%s: no route byte", e.Name())
			continue
		}
		b, err := strconv.Unquote(`'` + string(m[1]) + `'`)
		if err != nil {
			t.Errorf("%s: route byte %s: %v", e.Name(), m[1], err)
			continue
		}
		rt := routes[int(b[0])%len(routes)]
		want := seedName(rt, fs.tokens["alice"])
		if got := e.Name(); got != want && !regexp.MustCompile(`^`+regexp.QuoteMeta(want)+`_[0-9]+$`).MatchString(got) {
			right := -1
			for j, r := range routes {
				if n := seedName(r, fs.tokens["alice"]); e.Name() == n || regexp.MustCompile(`^`+regexp.QuoteMeta(n)+`_[0-9]+$`).MatchString(e.Name()) {
					right = j
				}
			}
			t.Errorf("%s: route byte %d picks %s %s (seed name %s): renumber it to %d", e.Name(), b[0], rt.method, rt.path, want, right)
		}
	}
}

// seedName is the name of a seed file for rt: method_path, the path
// without /v1/ and with the token id as "tid".
func seedName(rt fuzzRoute, tid string) string {
	p := strings.TrimPrefix(rt.path, "/v1/")
	if tid != "" {
		p = strings.Replace(p, tid, "tid", 1)
	}
	return strings.ToLower(rt.method) + "_" + strings.ReplaceAll(p, "/", "_")
}
