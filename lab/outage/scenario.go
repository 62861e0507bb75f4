package outage

import (
	"fmt"
	"strings"
	"time"
)

// Topology is how the lab's servers are laid out and which media path
// the devices' daemons use.
type Topology string

const (
	// P2P is parley as designed: supernodes spread over several volunteer
	// sites, the operator's cloud relay in a cloud region of its own,
	// direct media first (--path auto), mailboxes on the supernodes.
	P2P Topology = "p2p"
	// Supernode is P2P with every call relayed by a supernode (--path
	// supernode), as Skype was from 2012.
	Supernode Topology = "supernode"
	// Cloud is the cloud-hosted baseline: every supernode and the TURN
	// relay in one cloud region, every call relayed there (--path cloud),
	// mail only there.
	Cloud Topology = "cloud"
)

// Topologies returns every topology, in report order.
func Topologies() []Topology { return []Topology{P2P, Supernode, Cloud} }

// ParseTopologies parses a comma-separated list; empty means all.
func ParseTopologies(s string) ([]Topology, error) {
	if strings.TrimSpace(s) == "" {
		return Topologies(), nil
	}
	var out []Topology
	for _, f := range strings.Split(s, ",") {
		t := Topology(strings.TrimSpace(f))
		switch t {
		case P2P, Supernode, Cloud:
			out = append(out, t)
		default:
			return nil, fmt.Errorf("unknown topology %q (want p2p, supernode or cloud)", f)
		}
	}
	return out, nil
}

// path is the daemons' --path in a topology.
func (t Topology) path() string {
	switch t {
	case Supernode:
		return "supernode"
	case Cloud:
		return "cloud"
	}
	return "auto"
}

// Target selects the servers a scenario's fault hits.
type Target string

const (
	// TargetCloud: every server in the cloud region (in the p2p and
	// supernode topologies only the cloud relay lives there; in the cloud
	// topology, everything).
	TargetCloud Target = "cloud"
	// TargetSite: every server of one site, the one holding the first
	// supernode (a volunteer site, or the cloud region in the cloud
	// topology).
	TargetSite Target = "site"
	// TargetSupernodes: Scenario.Share of all supernodes, picked by the
	// seed.
	TargetSupernodes Target = "supernodes"
)

// Action is what the fault does to its targets.
type Action string

const (
	// Reboot: SIGKILL, then the same process with the same home after
	// Scenario.Down (disk kept).
	Reboot Action = "reboot"
	// Destroy: SIGKILL and wipe the home; never back.
	Destroy Action = "destroy"
	// Crash: SIGKILL; never back (disk kept but unused).
	Crash Action = "crash"
	// BootLoop: SIGKILL; back after Down, up for Up, down again, until
	// the end of the run.
	BootLoop Action = "bootloop"
)

// Scenario is one outage, declared as data so that a researcher can add
// one: which servers (Target, Share), what happens to them (Action,
// Down, Up), and when (Options.OutageAt after the workload starts).
type Scenario struct {
	Name        string
	Description string
	Target      Target
	// Share is the fraction of supernodes TargetSupernodes hits (0 < Share
	// ≤ 1); ignored for other targets.
	Share  float64
	Action Action
	// Down is how long a reboot or one boot-loop crash lasts; Up how
	// long a boot-loop stays up in between. Options.TimeScale scales both.
	Down, Up time.Duration
	// Overload: after the fault, a surviving supernode whose established
	// TCP connections exceed Options.LoadThreshold crashes too (the
	// Skype-2010 cascade). Nothing happens when the threshold is 0.
	Overload bool
}

// None is the control run's scenario name.
const None = "none"

// Scenarios are the outages of DESIGN.md's "The outages parley exists
// for", replayed, and the control run.
var Scenarios = []Scenario{
	{Name: None, Description: "control run: no fault"},
	{Name: "msn-2001", Description: "every server of the central (cloud) region reboots; down 60 s, disks kept",
		Target: TargetCloud, Action: Reboot, Down: 60 * time.Second},
	{Name: "ec2-2011", Description: "the cloud region is lost for the rest of the run, disks included (killed, homes wiped)",
		Target: TargetCloud, Action: Destroy},
	{Name: "crowdstrike-2024", Description: "every cloud host crashes and boot-loops: down 30 s, up 10 s, repeated",
		Target: TargetCloud, Action: BootLoop, Down: 30 * time.Second, Up: 10 * time.Second},
	{Name: "kakao-2022", Description: "one whole site (its supernodes and relay) is gone for the rest of the run",
		Target: TargetSite, Action: Crash},
	{Name: "skype-2010", Description: "60% of supernodes crash at once; survivors with more established TCP connections than the load threshold (--load-threshold) crash too (off by default)",
		Target: TargetSupernodes, Share: 0.6, Action: Crash, Overload: true},
}

// QuickScenarios are the scenarios of a --quick run.
var QuickScenarios = []string{None, "kakao-2022", "msn-2001"}

// ScenarioByName returns the named scenario.
func ScenarioByName(name string) (Scenario, error) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, nil
		}
	}
	var names []string
	for _, s := range Scenarios {
		names = append(names, s.Name)
	}
	return Scenario{}, fmt.Errorf("unknown scenario %q (want one of %s)", name, strings.Join(names, ", "))
}

// ParseScenarios parses a comma-separated list of names; empty means all.
func ParseScenarios(s string) ([]Scenario, error) {
	if strings.TrimSpace(s) == "" {
		return append([]Scenario(nil), Scenarios...), nil
	}
	var out []Scenario
	for _, f := range strings.Split(s, ",") {
		sc, err := ScenarioByName(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

// check reports a scenario that cannot run.
func (s Scenario) check() error {
	if s.Name == None {
		return nil
	}
	switch s.Target {
	case TargetCloud, TargetSite:
	case TargetSupernodes:
		if s.Share <= 0 || s.Share > 1 {
			return fmt.Errorf("scenario %s: share %g not in (0, 1]", s.Name, s.Share)
		}
	default:
		return fmt.Errorf("scenario %s: unknown target %q", s.Name, s.Target)
	}
	switch s.Action {
	case Destroy, Crash:
	case Reboot:
		if s.Down <= 0 {
			return fmt.Errorf("scenario %s: a reboot needs Down", s.Name)
		}
	case BootLoop:
		if s.Down <= 0 || s.Up <= 0 {
			return fmt.Errorf("scenario %s: a boot loop needs Down and Up", s.Name)
		}
	default:
		return fmt.Errorf("scenario %s: unknown action %q", s.Name, s.Action)
	}
	return nil
}

// Window is the outage's span relative to the workload's start: the
// first fault at Start, the last server back at End; End is the run's
// end for faults that last the rest of it.
func (s Scenario) Window(at, runLength time.Duration, scale float64) (start, end time.Duration, permanent bool) {
	switch s.Action {
	case Reboot:
		return at, at + scaled(s.Down, scale), false
	case BootLoop, Destroy, Crash:
		return at, runLength, true
	}
	// none: the same window as a fault would have, for comparison.
	return at, at, false
}

func scaled(d time.Duration, scale float64) time.Duration {
	if scale <= 0 {
		scale = 1
	}
	return time.Duration(float64(d) * scale)
}
