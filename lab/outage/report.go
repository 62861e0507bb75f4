package outage

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Report is a sweep's results and where they were written.
type Report struct {
	Seed     uint64
	Out      string
	Workload *Workload
	Runs     []*RunResult
	Elapsed  time.Duration
	// Command is the command line stated in report.md; empty means
	// os.Args.
	Command string

	opts Options
}

// Summary is summary.json, and what `parley lab outage --json` prints.
type Summary struct {
	Seed uint64       `json:"seed"`
	Runs []RunSummary `json:"runs"`
	Out  string       `json:"out"`
}

// Summary returns summary.json's content.
func (r *Report) Summary() Summary {
	s := Summary{Seed: r.Seed, Out: r.Out, Runs: []RunSummary{}}
	for _, run := range r.Runs {
		s.Runs = append(s.Runs, run.Summary)
	}
	return s
}

// Files written by Report.Write, in Report.Out.
const (
	SummaryFile  = "summary.json"
	RunsFile     = "runs.csv"
	EventsFile   = "events.csv"
	TimelineFile = "timeline.csv"
	ReportFile   = "report.md"
	// WorkloadFile is the seed's workload: devices, group, offline
	// windows, calls and messages, with times in nanoseconds.
	WorkloadFile = "workload.json"
)

// Write writes every file of the report.
func (r *Report) Write() error {
	b, err := json.MarshalIndent(r.Summary(), "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.Out, SummaryFile), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if b, err = json.MarshalIndent(r.Workload, "", "  "); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.Out, WorkloadFile), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := r.writeCSV(RunsFile, r.runsRows()); err != nil {
		return err
	}
	if err := r.writeCSV(EventsFile, r.eventRows()); err != nil {
		return err
	}
	if err := r.writeCSV(TimelineFile, r.timelineRows()); err != nil {
		return err
	}
	plots, err := r.Plots()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.Out, ReportFile), []byte(r.markdown(plots)), 0o644)
}

func (r *Report) writeCSV(name string, rows [][]string) error {
	f, err := os.Create(filepath.Join(r.Out, name))
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.WriteAll(rows)
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func ff(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
func fi(n int) string     { return strconv.Itoa(n) }
func fd(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 3, 64)
}

func (r *Report) runsRows() [][]string {
	rows := [][]string{{"topology", "scenario", "calls_attempted", "calls_connected", "calls_dropped", "setup_ms_p50", "setup_ms_p95", "gap_ms_p95",
		"gap_calls", "messages_sent", "messages_delivered", "messages_pending", "messages_lost", "messages_send_failed", "messages_duplicates", "latency_ms_p50", "latency_ms_p95",
		"recovery_s", "outage_start_s", "outage_end_s", "permanent"}}
	for _, run := range r.Runs {
		s := run.Summary
		rows = append(rows, []string{s.Topology, s.Scenario, fi(s.Calls.Attempted), fi(s.Calls.Connected), fi(s.Calls.Dropped),
			ff(s.Calls.SetupMSP50), ff(s.Calls.SetupMSP95), ff(s.Calls.GapMSP95), fi(run.GapCalls),
			fi(s.Messages.Sent), fi(s.Messages.Delivered), fi(run.Pending), fi(s.Messages.Lost), fi(run.SendFailed), fi(s.Messages.Duplicates),
			ff(s.Messages.LatencyMSP50), ff(s.Messages.LatencyMSP95), ff(s.RecoveryS),
			fd(run.OutageStart), fd(run.OutageEnd), strconv.FormatBool(run.Permanent)})
	}
	return rows
}

// eventRows: one row per call and per message copy.
func (r *Report) eventRows() [][]string {
	rows := [][]string{{"topology", "scenario", "kind", "id", "from", "to", "start_s", "planned_s", "outcome", "setup_ms", "gap_ms", "tier",
		"latency_ms", "received_s", "copies", "sender_state", "detail"}}
	for _, run := range r.Runs {
		for _, c := range run.Calls {
			outcome := "completed"
			switch {
			case !c.Connected:
				outcome = "failed"
			case c.Dropped:
				outcome = "dropped"
			}
			rows = append(rows, []string{string(run.Topology), run.Scenario, "call", fi(c.Plan.ID), c.Plan.Caller, c.Plan.Callee,
				fd(c.Plan.Start), fd(c.Plan.Length), outcome, ff(c.SetupMS), ff(c.GapMS), c.Tier, "", "", "", "",
				strings.TrimSpace(c.Reason + " " + c.Error)})
		}
		for _, m := range run.Messages {
			for _, rc := range m.Recipients {
				rows = append(rows, []string{string(run.Topology), run.Scenario, "message", fi(m.Plan.ID), m.Plan.From, rc.Handle,
					fd(m.SentAt), "", rc.Outcome, "", "", "", ff(rc.LatencyMS), fd(rc.ReceivedAt), fi(rc.Copies), rc.State, m.Error})
			}
		}
		for _, f := range run.Faults {
			rows = append(rows, []string{string(run.Topology), run.Scenario, "fault", "", "", f.Target, fd(f.At), "", f.What,
				"", "", "", "", "", "", "", ""})
		}
	}
	return rows
}

func (r *Report) timelineRows() [][]string {
	rows := [][]string{{"topology", "scenario", "t_s", "calls_expected", "calls_up", "availability", "messages_pending", "messages_overdue", "calls_down_in_control", "outage"}}
	for _, run := range r.Runs {
		for _, s := range run.Timeline {
			rows = append(rows, []string{string(run.Topology), run.Scenario, fi(s.T), fi(s.CallsExpected), fi(s.CallsUp),
				strconv.FormatFloat(s.Availability, 'f', 3, 64), fi(s.Pending), fi(s.Overdue), fi(s.CallsControlDown), strconv.FormatBool(s.Outage)})
		}
	}
	return rows
}

// markdown is report.md: the command and seed, the table, the plots.
func (r *Report) markdown(plots []string) string {
	var b strings.Builder
	cmd := r.Command
	if cmd == "" {
		cmd = strings.Join(os.Args, " ")
	}
	o := r.opts
	fmt.Fprintf(&b, "# parley outage lab\n\n")
	fmt.Fprintf(&b, "Command: `%s`  \nSeed: %d  \nElapsed: %s\n\n", cmd, r.Seed, r.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "Workload: %d devices (NAT types and profiles below), %d calls and %d messages planned over %s, "+
		"%d device(s) offline for a window; the outage strikes %s in, scenario times scaled by %.3g; counted %s after the workload ends. "+
		"Sites: %d × %d supernode(s) (all in the cloud region for the cloud topology) and one cloud relay.\n\n",
		len(r.Workload.Devices), len(r.Workload.Calls), len(r.Workload.Messages), r.Workload.Length,
		len(r.Workload.Offline), o.OutageAt, o.TimeScale, o.Drain, o.Sites, o.SupernodesPerSite)
	var devs []string
	for _, d := range r.Workload.Devices {
		p := ""
		if d.Mobile {
			p = " (mobile)"
		}
		devs = append(devs, fmt.Sprintf("%s %s%s", d.Handle, d.NAT, p))
	}
	fmt.Fprintf(&b, "Devices: %s. Group: %s.\n\n", strings.Join(devs, ", "), strings.Join(r.Workload.Group, ", "))
	b.WriteString("| topology | scenario | calls conn/att | dropped | setup p50/p95 ms | gap p95 ms (calls) | msgs sent | delivered | pending | lost | dup | latency p50/p95 ms | recovery s |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, run := range r.Runs {
		s := run.Summary
		rec := ff(s.RecoveryS)
		if s.RecoveryS < 0 {
			rec = "not recovered"
		}
		gap := "–"
		if run.GapCalls > 0 {
			gap = fmt.Sprintf("%.0f (%d)", s.Calls.GapMSP95, run.GapCalls)
		}
		lost := fi(s.Messages.Lost)
		if run.SendFailed > 0 {
			lost += fmt.Sprintf(" (%d refused at send)", run.SendFailed)
		}
		fmt.Fprintf(&b, "| %s | %s | %d/%d | %d | %.0f / %.0f | %s | %d | %d | %d | %s | %d | %.0f / %.0f | %s |\n",
			s.Topology, s.Scenario, s.Calls.Connected, s.Calls.Attempted, s.Calls.Dropped, s.Calls.SetupMSP50, s.Calls.SetupMSP95,
			gap, s.Messages.Sent, s.Messages.Delivered, run.Pending, lost, s.Messages.Duplicates,
			s.Messages.LatencyMSP50, s.Messages.LatencyMSP95, rec)
	}
	b.WriteString(`
How to read it: a call is *dropped* when it connected and ended before the
lab hung up; *gap* is the longest silence the caller heard during the
outage (the speech-like signal pauses for up to a few hundred ms by
itself), over the calls up across the outage window (– when none was).
A message sent to a group counts once per member. *Pending*
copies are still queued by the sender or held in a mailbox when the run
is counted; *lost* ones are neither delivered nor on their way, among them those
the sender's daemon refused at send (it could not queue them, e.g. the
handle did not resolve).
*Recovery* is from the outage's end (its start, when it lasts the rest
of the run) until, for good, every expected call is up (but those the
control run could not connect either) and no message to a device online
since its send is more than 5 s late; "not recovered" when that never
holds before the workload ends. Losses and drops are findings about
parley, not failures of the lab.

`)
	for _, run := range r.Runs {
		if len(run.Faults) == 0 {
			continue
		}
		fmt.Fprintf(&b, "Faults, %s × %s:", run.Topology, run.Scenario)
		for _, f := range run.Faults {
			fmt.Fprintf(&b, " %.1f s %s %s;", f.At.Seconds(), f.Target, f.What)
		}
		b.WriteString("\n\n")
	}
	for _, p := range plots {
		fmt.Fprintf(&b, "![%s](%s)\n\n", strings.TrimSuffix(p, ".png"), p)
	}
	return b.String()
}
