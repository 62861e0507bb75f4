package deptest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
)

const module = "github.com/parley-net/parley/"

// layers gives every package of the module its layer; a package imports
// only packages of strictly lower layers (so two roles, or media and
// discovery, never import each other). A name ending in "/..." covers the
// packages below it; the longest match wins. A new package must be added
// here: that is the moment to decide where it sits.
var layers = map[string]int{
	// 0: small libraries every layer may use. They know nothing of parley's
	// protocols or roles.
	"internal/clock": 0, "internal/wire": 0, "internal/lograte": 0, "internal/homelock": 0,
	"internal/keyfile": 0, "internal/p2plimits": 0, "internal/metrics": 0, "internal/turnrest": 0,
	"lab/netlab": 0, // network namespaces and kernel NATs; no parley code

	// 1: libraries built on those.
	"internal/pionlog": 1,

	// 2: the media engine and the protocols both sides speak (wire
	// formats, clients).
	"media/...": 2, "discovery": 2, "mailbox": 2, "turncreds": 2, "node/netcheck": 2,
	"browser/headless": 2, // drives Chromium, for tests and the demo

	// 3: the servers of those protocols.
	"internal/turnrelay": 3, "supernode/mailboxserver": 3,
	"discovery/discoverytest": 3, // test set-ups of discovery's users
	"browser":                 3, // a call leg in a web page: media's types, the page's protocol

	// 4: what two roles share on top of those: a guest's call, rung by a
	// supernode or a public daemon.
	"guestcall": 4,

	// 5: the roles, one process each.
	"node": 5, "supernode": 5, "cloudrelay": 5,

	// 6 and 7: what runs roles together: the lab, the test toolkit and
	// the dashboards' test.
	"lab": 6, "lab/natlab": 6, "lab/...": 7, "internal/nodetest": 6, "deploy/...": 6,

	// 8: the binary.
	"cmd/...": 8,

	// Test-only packages.
	"internal/deptest": 9,
}

// forbidden are imports no package of a prefix may have, directly or
// through others: what the layers alone do not say.
var forbidden = []struct {
	pkg, dep, why string
}{
	{"media", "github.com/libp2p/", "media is usable and testable without the overlay"},
	{"media", "github.com/multiformats/", "media is usable and testable without the overlay"},
	{"media", "github.com/ipfs/", "media is usable and testable without the overlay"},
	{"discovery", "github.com/pion/", "discovery knows nothing of media"},
	{"node", module + "internal/turnrelay", "a node only fetches TURN credentials (turncreds); it never links the TURN server"},
	{"node", module + "supernode", "a node speaks the supernode's protocols, never links its server"},
}

type pkg struct {
	ImportPath   string
	Dir          string
	GoFiles      []string // non-test files, for TestFunctionLength
	Imports      []string
	Deps         []string
	TestImports  []string
	XTestImports []string
}

var (
	listOnce sync.Once
	listed   []pkg
	listErr  error
)

// listModule lists the module's packages once for all the tests.
func listModule(t *testing.T) []pkg {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not on PATH; cannot list dependencies")
	}
	listOnce.Do(func() { listed, listErr = goList() })
	if listErr != nil {
		t.Fatal(listErr)
	}
	return listed
}

func goList() ([]pkg, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(goTool, "list", "-json", module+"...")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("go list: %w\n%s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("go list: %w", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

// layerOf is the layer of a module-relative package path, by its longest
// match in layers.
func layerOf(path string) (int, bool) {
	if l, ok := layers[path]; ok {
		return l, true
	}
	best, layer := "", 0
	for k, l := range layers {
		prefix, ok := strings.CutSuffix(k, "/...")
		if !ok || path != prefix && !strings.HasPrefix(path, prefix+"/") {
			continue
		}
		if len(prefix) > len(best) {
			best, layer = prefix, l
		}
	}
	return layer, best != ""
}

// TestLayers: every package has a layer, and imports only packages of
// lower layers.
func TestLayers(t *testing.T) {
	for _, p := range listModule(t) {
		name := strings.TrimPrefix(p.ImportPath, module)
		l, ok := layerOf(name)
		if !ok {
			t.Errorf("%s has no layer: add it to the table in internal/deptest (and to ARCHITECTURE.md)", name)
			continue
		}
		for _, imp := range p.Imports {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			dl, ok := layerOf(dep)
			if ok && dl >= l {
				t.Errorf("%s (layer %d) imports %s (layer %d): imports must point to lower layers", name, l, dep, dl)
			}
		}
	}
}

// TestForbidden: the imports no layer rule covers.
func TestForbidden(t *testing.T) {
	for _, p := range listModule(t) {
		name := strings.TrimPrefix(p.ImportPath, module)
		for _, f := range forbidden {
			if name != f.pkg && !strings.HasPrefix(name, f.pkg+"/") {
				continue
			}
			for _, d := range p.Deps {
				if strings.HasPrefix(d, f.dep) {
					t.Errorf("%s depends on %s: %s", name, d, f.why)
				}
			}
		}
	}
}

// TestNothingImportsLabOrInterop: the lab runs the product, never the
// other way round, even in tests (only the lab itself and cmd/parley, which
// offers `parley lab`, use it); interop holds scripts and notes that
// nothing imports.
func TestNothingImportsLabOrInterop(t *testing.T) {
	for _, p := range listModule(t) {
		name := strings.TrimPrefix(p.ImportPath, module)
		all := append(append(append([]string{}, p.Imports...), p.TestImports...), p.XTestImports...)
		sort.Strings(all)
		for _, imp := range all {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			switch {
			case dep == "interop" || strings.HasPrefix(dep, "interop/"):
				t.Errorf("%s imports %s: nothing imports interop", name, dep)
			case (dep == "lab" || strings.HasPrefix(dep, "lab/")) &&
				name != "lab" && !strings.HasPrefix(name, "lab/") && !strings.HasPrefix(name, "cmd/"):
				t.Errorf("%s imports %s: only the lab and cmd use the lab", name, dep)
			}
		}
	}
}
