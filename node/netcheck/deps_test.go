package netcheck

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: netcheck speaks STUN and TURN only; it never imports
// libp2p, WebRTC, the lab, or the node that uses it.
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not on PATH; cannot list dependencies")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range []string{"github.com/libp2p/", "github.com/pion/webrtc", "github.com/parley-net/parley/lab",
			"github.com/parley-net/parley/supernode", "github.com/parley-net/parley/discovery"} {
			if strings.HasPrefix(dep, f) {
				t.Errorf("netcheck depends on %s", dep)
			}
		}
		if dep == "github.com/parley-net/parley/node" {
			t.Errorf("netcheck depends on the node package")
		}
	}
}
