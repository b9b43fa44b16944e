package clock

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// wallClockAllowed lists the functions of production code that may read the
// wall clock directly, each with its reason. Keep it short: a timing that
// decides nothing (how long something took, for a log line, a metric, a
// progress bar or a benchmark) or a deadline of a real network connection,
// which only the real clock can express. Everything else takes a clock.
var wallClockAllowed = map[string]string{
	"internal/clock/clock.go:System": "the one reading of the wall clock that services are handed",
	// Log and metric timings.
	"internal/server/http.go:(*Server).rootOf":     "request duration for the access log",
	"internal/server/http.go:(*Server).wrap":       "request duration for the access log and the latency metric",
	"internal/server/metrics.go:(*Server).observe": "latency metric",
	// Timing parity: how long a known user's failure takes to record, so
	// that an unknown user's failure waits as long (online.writePad).
	"internal/online/attempt.go:(*Service).fail": "how long recording a failure took, for timing parity only",
	// Network deadlines: net.Conn deadlines are wall-clock instants.
	"internal/server/offline.go:(*Server).createBundle": "HTTP write deadline for a long bundle answer",
	"internal/server/offline.go:(*Server).offlineLogin": "HTTP write deadline for a long bundle answer",
	// Progress bars.
	"internal/cli/admin_offline.go:newProgress":     "progress bar's elapsed time",
	"internal/cli/admin_offline.go:(*progress).set": "progress bar's elapsed time",
}

// wallClockAllowedDirs are whole directories of benchmark harnesses, whose
// job is to time things. Every harness lives under internal/bench/; no
// product package holds benchmark code.
var wallClockAllowedDirs = []string{
	"internal/bench/",
}

// TestNoWallClock fails on a production call of time.Now, time.Since or
// time.Until outside the allow-lists above (see the package comment).
func TestNoWallClock(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			// testdata, hidden folders, and test-support packages (storetest).
			if name == "testdata" || strings.HasSuffix(name, "test") || (strings.HasPrefix(name, ".") && path != root) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		for _, dir := range wallClockAllowedDirs {
			if strings.HasPrefix(rel, dir) {
				return nil
			}
		}
		for _, site := range wallClockCalls(t, path) {
			key := rel + ":" + site.fn
			if _, ok := wallClockAllowed[key]; !ok {
				found = append(found, rel+":"+strconv.Itoa(site.line)+" "+site.fn+": "+site.call)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(found)
	for _, f := range found {
		t.Errorf("%s reads the wall clock: take the clock the caller gives (clock.Or), or add it to wallClockAllowed with the reason", f)
	}
}

type wallClockSite struct {
	fn, call string
	line     int
}

// wallClockCalls returns the uses of time.Now, time.Since and time.Until in
// the file, with the function each stands in (Recv.Method for methods).
func wallClockCalls(t *testing.T, path string) []wallClockSite {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	timeName := ""
	for _, imp := range f.Imports {
		p, err := strconv.Unquote(imp.Path.Value)
		if err != nil {
			t.Fatalf("%s: import %s: %v", path, imp.Path.Value, err)
		}
		if p == "time" {
			timeName = "time"
			if imp.Name != nil {
				timeName = imp.Name.Name
			}
		}
	}
	if timeName == "" {
		return nil
	}
	var out []wallClockSite
	for _, decl := range f.Decls {
		fn := "(package)"
		if fd, ok := decl.(*ast.FuncDecl); ok {
			fn = fd.Name.Name
			if fd.Recv != nil && len(fd.Recv.List) == 1 {
				fn = "(" + typeName(fd.Recv.List[0].Type) + ")." + fn
			}
		}
		ast.Inspect(decl, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			id, ok := sel.X.(*ast.Ident)
			if !ok || id.Name != timeName {
				return true
			}
			switch sel.Sel.Name {
			case "Now", "Since", "Until":
				out = append(out, wallClockSite{fn: fn, call: "time." + sel.Sel.Name, line: fset.Position(sel.Pos()).Line})
			}
			return true
		})
	}
	return out
}

func typeName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.StarExpr:
		return "*" + typeName(x.X)
	case *ast.Ident:
		return x.Name
	case *ast.IndexExpr:
		return typeName(x.X)
	case *ast.IndexListExpr:
		return typeName(x.X)
	}
	return "?"
}
