package natlab

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// WriteTable prints the matrix as a table, callers in rows and callees in
// columns; each cell is the tier, the setup time and the audio
// correlation, or FAIL. Calls with a forced path or a profile, and the
// fault, follow as lines of their own.
// Long because it is one report's layout, printed in the order it reads.
func (m *Matrix) WriteTable(w io.Writer) error {
	cells := map[[2]string]string{}
	var extra []Pair
	for _, p := range m.Pairs {
		if p.ForcedPath != "" || p.Profile != "" {
			extra = append(extra, p)
			continue
		}
		cells[[2]string{p.Caller, p.Callee}] = p.cell(m.LossPct > 0)
	}
	var rows, cols []string
	for _, t := range m.Types {
		for _, p := range m.Pairs {
			if _, ok := cells[[2]string{p.Caller, p.Callee}]; !ok {
				continue
			}
			if p.Caller == t && !slices.Contains(rows, t) {
				rows = append(rows, t)
			}
			if p.Callee == t && !slices.Contains(cols, t) {
				cols = append(cols, t)
			}
		}
	}
	var b strings.Builder
	if len(rows) > 0 {
		corner := "caller \\ callee"
		w0 := len(corner)
		for _, r := range rows {
			w0 = max(w0, len(r))
		}
		widths := make([]int, len(cols))
		for j, c := range cols {
			widths[j] = len(c)
			for _, r := range rows {
				widths[j] = max(widths[j], len(cells[[2]string{r, c}]))
			}
		}
		fmt.Fprintf(&b, "%-*s", w0, corner)
		for j, c := range cols {
			fmt.Fprintf(&b, " | %-*s", widths[j], c)
		}
		b.WriteString("\n" + strings.Repeat("-", w0))
		for j := range cols {
			b.WriteString("-+-" + strings.Repeat("-", widths[j]))
		}
		b.WriteString("\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "%-*s", w0, r)
			for j, c := range cols {
				cell, ok := cells[[2]string{r, c}]
				if !ok {
					cell = "-"
				}
				fmt.Fprintf(&b, " | %-*s", widths[j], cell)
			}
			b.WriteString("\n")
		}
		legend := "cell: tier, call setup (when the call moved to a better pair: when it did, from which tier, and the setup), correlation of the audio heard with the audio sent"
		if m.LossPct > 0 {
			legend += fmt.Sprintf(", audio concealed at the caller (%d%% UDP loss at each caller's NAT)", m.LossPct)
		}
		b.WriteString(legend + "\n")
		if line := m.setupLine(); line != "" {
			b.WriteString(line + "\n")
		}
	}
	for _, p := range extra {
		what := ""
		if p.Profile != "" {
			what += " --profile " + p.Profile
		}
		if p.ForcedPath != "" {
			what += " --path " + p.ForcedPath
		}
		fmt.Fprintf(&b, "%s → %s%s: %s\n", p.Caller, p.Callee, what, p.cell(m.LossPct > 0))
	}
	for _, p := range m.Pairs {
		if !p.OK {
			fmt.Fprintf(&b, "FAIL %s → %s: %s\n", p.Caller, p.Callee, p.Error)
		}
	}
	if f := m.Fault; f != nil {
		for i := range f.Calls {
			fmt.Fprintf(&b, "fault: %s\n", f.Calls[i].summary(f.Killed, f.KilledAfterMS))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (p Pair) cell(concealed bool) string {
	if !p.OK {
		return "FAIL"
	}
	c := fmt.Sprintf("%s %.0fms %.2f", p.Path, p.SetupMS, p.AudioCorrelation)
	if p.FirstPath != "" {
		c = fmt.Sprintf("%s %.0fms (from %s at %.0fms) %.2f", p.Path, p.FinalPathMS, p.FirstPath, p.SetupMS, p.AudioCorrelation)
	}
	if concealed {
		c += fmt.Sprintf(" c%.0fms", p.ConcealedMS)
	}
	return c
}

// setupLine is the matrix's Summary in a line.
func (m *Matrix) setupLine() string {
	s := m.Summary
	if s == nil {
		s = m.summarize() // a matrix put together by hand (tests)
	}
	if s == nil {
		return ""
	}
	return fmt.Sprintf("NATed calls: %d; setup p50 %.0f ms (max %.0f); final tier p50 %.0f ms (max %.0f); %d moved tier; %d of %d punchable pairs direct",
		s.NATedCalls, s.SetupP50MS, s.SetupMaxMS, s.FinalPathP50MS, s.FinalPathMaxMS, s.Moved, s.PunchableDirect, s.Punchable)
}
