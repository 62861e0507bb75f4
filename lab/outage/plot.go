package outage

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Plots draws the report's PNGs into Report.Out and returns their file
// names: availability over time per scenario (one line per topology, the
// outage shaded), the CDFs of call setup time and message latency per
// topology, and the lost messages and dropped calls of every run.
func (r *Report) Plots() ([]string, error) {
	var files []string
	var scenarios []string
	var topos []Topology
	for _, run := range r.Runs {
		if !slices.Contains(scenarios, run.Scenario) {
			scenarios = append(scenarios, run.Scenario)
		}
		if !slices.Contains(topos, run.Topology) {
			topos = append(topos, run.Topology)
		}
	}
	for _, sc := range scenarios {
		name := "availability-" + sc + ".png"
		if err := r.availabilityPlot(sc, topos, filepath.Join(r.Out, name)); err != nil {
			return nil, fmt.Errorf("plot %s: %w", name, err)
		}
		files = append(files, name)
	}
	setup := map[Topology][]float64{}
	latency := map[Topology][]float64{}
	for _, run := range r.Runs {
		for _, c := range run.Calls {
			if c.Connected {
				setup[run.Topology] = append(setup[run.Topology], c.SetupMS)
			}
		}
		for _, m := range run.Messages {
			for _, rc := range m.Recipients {
				if rc.Delivered {
					latency[run.Topology] = append(latency[run.Topology], max(1, rc.LatencyMS))
				}
			}
		}
	}
	if err := cdfPlot("Call setup time (all scenarios)", "setup (ms)", topos, setup, false, filepath.Join(r.Out, "setup-cdf.png")); err != nil {
		return nil, err
	}
	if err := cdfPlot("Message delivery latency (all scenarios)", "send to commit at the recipient (ms, log)", topos, latency, true, filepath.Join(r.Out, "latency-cdf.png")); err != nil {
		return nil, err
	}
	files = append(files, "setup-cdf.png", "latency-cdf.png")
	if err := r.lossPlot(filepath.Join(r.Out, "losses.png")); err != nil {
		return nil, err
	}
	return append(files, "losses.png"), nil
}

var outageShade = color.NRGBA{R: 255, G: 120, B: 120, A: 70}

func (r *Report) availabilityPlot(scenario string, topos []Topology, file string) error {
	p := plot.New()
	p.Title.Text = "Calls up / calls expected: " + scenario
	p.X.Label.Text = "seconds after the workload starts (outage shaded)"
	p.Y.Label.Text = "availability"
	p.Y.Min, p.Y.Max = 0, 1.05
	p.Legend.Top = false
	p.Legend.Left = true
	shaded := false
	for i, t := range topos {
		for _, run := range r.Runs {
			if run.Topology != t || run.Scenario != scenario {
				continue
			}
			if !shaded && run.Scenario != None {
				end := run.OutageEnd
				if end <= run.OutageStart {
					end = run.Length
				}
				x0, x1 := run.OutageStart.Seconds(), end.Seconds()
				poly, err := plotter.NewPolygon(plotter.XYs{{X: x0, Y: 0}, {X: x1, Y: 0}, {X: x1, Y: 1.05}, {X: x0, Y: 1.05}})
				if err != nil {
					return err
				}
				poly.Color = outageShade
				poly.LineStyle.Width = 0
				p.Add(poly)
				p.Legend.Add("outage", poly)
				shaded = true
			}
			xys := make(plotter.XYs, len(run.Timeline))
			for j, s := range run.Timeline {
				xys[j] = plotter.XY{X: float64(s.T), Y: s.Availability}
			}
			if len(xys) == 0 {
				continue
			}
			l, err := plotter.NewLine(xys)
			if err != nil {
				return err
			}
			l.Color = plotutil.Color(i)
			l.Width = vg.Points(1.5)
			l.Dashes = plotutil.Dashes(i)
			p.Add(l)
			p.Legend.Add(string(t), l)
		}
	}
	return p.Save(8*vg.Inch, 4*vg.Inch, file)
}

func cdfPlot(title, xlabel string, topos []Topology, data map[Topology][]float64, logX bool, file string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = "fraction ≤ x"
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = false
	p.Legend.Left = false
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	drawn := 0
	for i, t := range topos {
		xs := slices.Clone(data[t])
		if len(xs) == 0 {
			continue
		}
		slices.Sort(xs)
		xys := make(plotter.XYs, 0, 2*len(xs))
		for j, x := range xs {
			if j == 0 {
				xys = append(xys, plotter.XY{X: x, Y: 0})
			}
			xys = append(xys, plotter.XY{X: x, Y: float64(j) / float64(len(xs))}, plotter.XY{X: x, Y: float64(j+1) / float64(len(xs))})
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		l.Dashes = plotutil.Dashes(i)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (n=%d)", t, len(xs)), l)
		drawn++
	}
	if drawn == 0 {
		p.Title.Text += " (no data)"
		if logX {
			p.X.Min, p.X.Max = 1, 10
		}
	}
	return p.Save(6*vg.Inch, 4*vg.Inch, file)
}

func (r *Report) lossPlot(file string) error {
	p := plot.New()
	p.Title.Text = "Lost messages and dropped calls per run"
	p.Y.Label.Text = "count"
	var lost, dropped plotter.Values
	var names []string
	for _, run := range r.Runs {
		lost = append(lost, float64(run.Summary.Messages.Lost))
		dropped = append(dropped, float64(run.Summary.Calls.Dropped))
		names = append(names, string(run.Topology)+"\n"+run.Scenario)
	}
	if len(names) == 0 {
		return p.Save(6*vg.Inch, 4*vg.Inch, file)
	}
	w := vg.Points(math.Max(4, math.Min(14, 300/float64(len(names)))))
	bl, err := plotter.NewBarChart(lost, w)
	if err != nil {
		return err
	}
	bl.Color = plotutil.Color(0)
	bl.LineStyle.Width = 0
	bl.Offset = -w / 2
	bd, err := plotter.NewBarChart(dropped, w)
	if err != nil {
		return err
	}
	bd.Color = plotutil.Color(1)
	bd.LineStyle.Width = 0
	bd.Offset = w / 2
	p.Add(bl, bd)
	p.Legend.Add("lost messages", bl)
	p.Legend.Add("dropped calls", bd)
	p.Legend.Top = true
	p.NominalX(names...)
	p.X.Tick.Label.Rotation = math.Pi / 6
	p.X.Tick.Label.XAlign = -1
	p.Y.Min = 0
	if max(slices.Max(lost), slices.Max(dropped)) == 0 {
		p.Y.Max = 1
	}
	width := vg.Length(math.Max(6, float64(len(names))*0.6)) * vg.Inch
	return p.Save(width, 4.5*vg.Inch, file)
}
