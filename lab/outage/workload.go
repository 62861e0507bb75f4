package outage

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/parley-net/parley/lab/netlab"
)

// WorkloadConfig sizes a workload. Every field's zero value is replaced by
// the default named beside it.
type WorkloadConfig struct {
	Devices  int           // devices (12); each behind a NAT router of its own
	Mobile   float64       // share of devices on the mobile profile (0.25; negative: none)
	Length   time.Duration // from the first operation to the last (90 s)
	CallRate float64       // calls started per minute over the whole lab (10)
	CallMean time.Duration // mean call length, exponential (20 s), at least 5 s
	MsgRate  float64       // messages per minute (30)
	// Offline is how many devices are offline (daemon stopped) for a
	// window in the middle of the run, so messages to them go to the
	// mailboxes (2; negative: none).
	Offline int
	// GroupSize is the members of the one group some messages go to (4;
	// negative: no group).
	GroupSize int
}

func (c WorkloadConfig) withDefaults() WorkloadConfig {
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Devices == 0 {
		c.Devices = 12
	}
	def(&c.Mobile, 0.25)
	if c.Length == 0 {
		c.Length = 90 * time.Second
	}
	def(&c.CallRate, 10)
	if c.CallMean == 0 {
		c.CallMean = 20 * time.Second
	}
	def(&c.MsgRate, 30)
	if c.Offline == 0 {
		c.Offline = 2
	}
	if c.GroupSize == 0 {
		c.GroupSize = 4
	}
	return c
}

// Device is one user's device in the workload.
type Device struct {
	Handle string         `json:"handle"`
	NAT    netlab.NATType `json:"nat"`
	Mobile bool           `json:"mobile"`
}

// CallPlan is one call of the workload: the caller rings the callee at
// Start (after the workload's start) and hangs up after Length.
type CallPlan struct {
	ID     int           `json:"id"`
	Caller string        `json:"caller"`
	Callee string        `json:"callee"`
	Start  time.Duration `json:"start"`
	Length time.Duration `json:"length"`
}

// MessagePlan is one message: From sends it at At to a handle or to
// "#group".
type MessagePlan struct {
	ID   int           `json:"id"`
	From string        `json:"from"`
	To   string        `json:"to"`
	At   time.Duration `json:"at"`
}

// OfflinePlan takes a device offline (its daemon stopped) from From to
// Until.
type OfflinePlan struct {
	Handle string        `json:"handle"`
	From   time.Duration `json:"from"`
	Until  time.Duration `json:"until"`
}

// Workload is everything the users do in one run. The same seed and
// config give the same workload.
type Workload struct {
	Seed     uint64        `json:"seed"`
	Length   time.Duration `json:"length"`
	Devices  []Device      `json:"devices"`
	Group    []string      `json:"group,omitempty"` // members of "#group"; the first creates it
	Calls    []CallPlan    `json:"calls"`
	Messages []MessagePlan `json:"messages"`
	Offline  []OfflinePlan `json:"offline"`
}

// GroupName is the conversation name of the workload's group.
const GroupName = "#group"

// natMix is the seeded mix of NAT types devices sit behind, weighted as
// home and office networks are: mostly port-restricted and cone NATs,
// some symmetric (carrier-grade NAT, mobile), a few public and
// UDP-blocked.
var natMix = []struct {
	t netlab.NATType
	w int
}{
	{netlab.PortRestricted, 4}, {netlab.FullCone, 2}, {netlab.Restricted, 2},
	{netlab.Symmetric, 2}, {netlab.Public, 1}, {netlab.UDPBlocked, 1},
}

// callGuard keeps a device's calls apart, so each ends before the next
// rings and every call has a recording of its own.
const callGuard = 3 * time.Second

// NewWorkload draws a workload from seed: device NAT types and profiles,
// offline windows, and Poisson arrivals of calls and messages (exponential
// gaps at the configured rates). A call whose parties are busy or offline
// at its start is not placed; the draw goes on, so the result depends on
// the seed and config only.
// Long because the draw reads best as the one sequence that consumes the
// random stream in a fixed order (devices, group, offline windows, calls,
// messages): that order is part of what a seed means.
func NewWorkload(seed uint64, cfg WorkloadConfig) *Workload {
	cfg = cfg.withDefaults()
	rng := rand.New(rand.NewPCG(seed, 0x9a51e7))
	w := &Workload{Seed: seed, Length: cfg.Length}
	total := 0
	for _, m := range natMix {
		total += m.w
	}
	mobile := int(math.Round(cfg.Mobile * float64(cfg.Devices)))
	for i := range cfg.Devices {
		pick := rng.IntN(total)
		var t netlab.NATType
		for _, m := range natMix {
			if pick < m.w {
				t = m.t
				break
			}
			pick -= m.w
		}
		w.Devices = append(w.Devices, Device{Handle: fmt.Sprintf("u%02d", i+1), NAT: t, Mobile: i >= cfg.Devices-mobile})
	}
	if cfg.GroupSize > 1 && cfg.Devices >= cfg.GroupSize {
		for _, i := range rng.Perm(cfg.Devices)[:cfg.GroupSize] {
			w.Group = append(w.Group, w.Devices[i].Handle)
		}
	}
	// Offline windows: a third to two thirds of the run, inside it.
	if cfg.Offline > 0 {
		for _, i := range rng.Perm(cfg.Devices)[:min(cfg.Offline, cfg.Devices/2)] {
			from := time.Duration((0.15 + 0.2*rng.Float64()) * float64(cfg.Length))
			until := from + time.Duration((0.3+0.2*rng.Float64())*float64(cfg.Length))
			w.Offline = append(w.Offline, OfflinePlan{Handle: w.Devices[i].Handle, From: from.Round(time.Millisecond), Until: until.Round(time.Millisecond)})
		}
	}
	busy := map[string][][2]time.Duration{}
	free := func(h string, from, to time.Duration) bool {
		if w.offlineDuring(h, from-callGuard, to+callGuard) {
			return false
		}
		for _, b := range busy[h] {
			if from < b[1]+callGuard && b[0] < to+callGuard {
				return false
			}
		}
		return true
	}
	exp := func(perMinute float64) time.Duration {
		return time.Duration(rng.ExpFloat64() / perMinute * float64(time.Minute))
	}
	for t := exp(cfg.CallRate); t < cfg.Length; t += exp(cfg.CallRate) {
		a, b := rng.IntN(cfg.Devices), rng.IntN(cfg.Devices-1)
		if b >= a {
			b++
		}
		length := max(5*time.Second, time.Duration(rng.ExpFloat64()*float64(cfg.CallMean))).Round(time.Second)
		start := t.Round(time.Millisecond)
		end := min(start+length, cfg.Length)
		caller, callee := w.Devices[a].Handle, w.Devices[b].Handle
		if end-start < 5*time.Second || !free(caller, start, end) || !free(callee, start, end) {
			continue
		}
		busy[caller] = append(busy[caller], [2]time.Duration{start, end})
		busy[callee] = append(busy[callee], [2]time.Duration{start, end})
		w.Calls = append(w.Calls, CallPlan{ID: len(w.Calls) + 1, Caller: caller, Callee: callee, Start: start, Length: end - start})
	}
	for t := exp(cfg.MsgRate); t < cfg.Length; t += exp(cfg.MsgRate) {
		at := t.Round(time.Millisecond)
		a := rng.IntN(cfg.Devices)
		from := w.Devices[a].Handle
		toGroup := len(w.Group) > 0 && rng.IntN(5) == 0
		b := rng.IntN(cfg.Devices - 1)
		if b >= a {
			b++
		}
		if w.offlineDuring(from, at, at) || (toGroup && !slices.Contains(w.Group, from)) {
			continue // an offline device sends nothing; only members write to the group
		}
		to := w.Devices[b].Handle
		if toGroup {
			to = GroupName
		}
		w.Messages = append(w.Messages, MessagePlan{ID: len(w.Messages) + 1, From: from, To: to, At: at})
	}
	return w
}

// offlineDuring reports whether the device is offline at any time in
// [from, to].
func (w *Workload) offlineDuring(h string, from, to time.Duration) bool {
	for _, o := range w.Offline {
		if o.Handle == h && from <= o.Until && o.From <= to {
			return true
		}
	}
	return false
}

// Recipients are the handles a message is for: its addressee, or every
// group member but the sender.
func (w *Workload) Recipients(m MessagePlan) []string {
	if m.To != GroupName {
		return []string{m.To}
	}
	var out []string
	for _, h := range w.Group {
		if h != m.From {
			out = append(out, h)
		}
	}
	return out
}

// Device returns the device with handle h.
func (w *Workload) Device(h string) (Device, bool) {
	for _, d := range w.Devices {
		if d.Handle == h {
			return d, true
		}
	}
	return Device{}, false
}
