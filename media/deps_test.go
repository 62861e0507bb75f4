package media

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies enforces DESIGN.md's layering: media knows nothing of
// libp2p (nor of the overlay packages built on it), so it can be used and
// tested on its own (like tailscale's deps_test.go).
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not on PATH; cannot list dependencies")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-test", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{
		"github.com/libp2p/",
		"github.com/multiformats/",
		"github.com/ipfs/",
		"github.com/parley-net/parley/node",
		"github.com/parley-net/parley/discovery",
		"github.com/parley-net/parley/supernode",
		"github.com/parley-net/parley/cmd",
		"github.com/parley-net/parley/lab",
		"github.com/parley-net/parley/interop",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("media depends on %s", dep)
			}
		}
	}
}
