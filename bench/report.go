package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"slices"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// shown are the metrics of the table and the chart, in order, with units.
var shown = []struct{ metric, label, unit string }{
	{MetricPPS, "64-byte frames delivered, unpaced flood", "pps"},
	{MetricNewFlowPPS, "64-byte frames delivered, unpaced, each a new flow", "pps"},
	{MetricLoss, "loss of the unpaced flood", "%"},
	{MetricCPU, "CPU per delivered packet, unpaced flood", "ns"},
	{MetricPPSZeroLoss, "64-byte frames, highest rate under 0.1% loss", "pps"},
	{MetricPPSZeroLossLoss, "loss at that rate", "%"},
	{MetricPPSZeroLossTrials, "trials of that search", ""},
	{MetricIMIXPPS, "IMIX frames delivered, unpaced flood", "pps"},
	{MetricIMIXGbps, "IMIX delivered, unpaced flood", "Gbit/s"},
	{MetricIMIXLoss, "loss of the unpaced IMIX flood", "%"},
	{MetricIMIXZeroLoss, "IMIX, highest rate under 0.1% loss", "pps"},
	{MetricIMIXGbpsZeroLoss, "IMIX, highest rate under 0.1% loss", "Gbit/s"},
	{MetricIMIXZeroLossLoss, "loss at that rate", "%"},
	{MetricIMIXZeroLossTrials, "trials of that search", ""},
	{MetricTCP1, "TCP, 1 stream", "Gbit/s"},
	{MetricTCP2, "TCP, 2 streams", "Gbit/s"},
	{MetricRetrans, "TCP retransmits (1 stream)", ""},
	{MetricTCP1CPUNode1, "TCP 1 stream, CPU per Gbit, node 1's tortied", "CPU s"},
	{MetricTCP1CPUNode2, "TCP 1 stream, CPU per Gbit, node 2's tortied", "CPU s"},
	{MetricTCP1CPUMachine, "TCP 1 stream, CPU per Gbit, whole machine", "CPU s"},
	{MetricTCP2CPUMachine, "TCP 2 streams, CPU per Gbit, whole machine", "CPU s"},
	{MetricLatP50, "latency p50, idle", "µs"},
	{MetricLatP99, "latency p99, idle", "µs"},
	{MetricLoadP50, "latency p50, under load", "µs"},
	{MetricLoadP99, "latency p99, under load", "µs"},
	{MetricScaleTCP, "TCP, two pairs on one node", "Gbit/s"},
	{MetricScaleCPUNode, "two pairs on one node, CPU per Gbit, the node's tortied", "CPU s"},
	{MetricScaleCPUMachine, "two pairs on one node, CPU per Gbit, whole machine", "CPU s"},
	{MetricScaleOnePair, "TCP, one pair, four streams, on one node", "Gbit/s"},
	{MetricPodMTU, "pod MTU", "bytes"},
}

func (r *Report) value(setup, metric string) (float64, bool) {
	for _, m := range r.Measurements {
		if m.Setup == setup && m.Metric == metric {
			return m.Median, true
		}
	}
	return 0, false
}

func (r *Report) setups() []string {
	measured := map[string]bool{}
	for _, m := range r.Measurements {
		measured[m.Setup] = true
	}
	var out []string
	for _, s := range Setups {
		for _, name := range []string{s.Name, s.Name + BaselineSuffix} {
			if measured[name] {
				out = append(out, name)
			}
		}
	}
	return out
}

func format(v float64) string {
	switch {
	case v > -0.005 && v < 0.005:
		return "0"

	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// Markdown renders the medians per setup and the ratios of each setup to
// its reference: tortie to the kernel, with policies to without.
func (r *Report) Markdown() string {
	var b strings.Builder
	setups := r.setups()
	fmt.Fprintf(&b, "Measured %s on %d CPUs, Linux %s; %s per measurement, median of %d; %d-byte frames",
		r.Date.Format("2006-01-02 15:04 MST"), r.CPUs, r.Kernel, r.Duration, r.Reps, r.FrameSize)
	if r.SearchSteps > 0 {
		fmt.Fprintf(&b, "; zero-loss searches of at most %d trials of %s", r.SearchSteps, r.TrialDuration)
	}
	if r.Interleaved {
		b.WriteString("; setups interleaved (all labs up, measured in turn in each repetition)")
	}
	if r.Congestion != "" {
		fmt.Fprintf(&b, "; TCP tests under %s congestion control", r.Congestion)
	} else {
		b.WriteString("; TCP tests under the pods' default congestion control")
	}
	b.WriteString(".\n\n")
	if r.Stopped != "" {
		fmt.Fprintf(&b, "**The run stopped part-way** (%s): these are the figures of what was measured until then; "+
			"where a repetition was cut short, a setup and its reference may have values of different repetitions, which the paired ratios leave out.\n\n",
			firstLine(r.Stopped))
	}
	b.WriteString("| metric |")
	for _, s := range setups {
		fmt.Fprintf(&b, " %s |", s)
	}
	b.WriteString("\n|---|")
	for range setups {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, m := range shown {
		row := fmt.Sprintf("| %s (%s) |", m.label, m.unit)
		if m.unit == "" {
			row = fmt.Sprintf("| %s |", m.label)
		}
		found := false
		for _, s := range setups {
			if v, ok := r.value(s, m.metric); ok {
				if m.unit == "" && v == math.Trunc(v) {
					row += fmt.Sprintf(" %.0f |", v) // counts
				} else {
					row += " " + format(v) + " |"
				}
				found = true
			} else {
				row += " – |"
			}
		}
		if found {
			b.WriteString(row + "\n")
		}
	}
	if len(r.Ratios) > 0 {
		if r.Interleaved {
			b.WriteString("\n| setup / reference | metric | ratio of medians | median of paired ratios |\n|---|---|---:|---:|\n")
		} else {
			b.WriteString("\n| setup / reference | metric | ratio |\n|---|---|---:|\n")
		}
		for _, x := range r.Ratios {
			fmt.Fprintf(&b, "| %s / %s | %s | %.2f× |", x.Setup, x.Reference, x.Metric, x.Ratio)
			switch {
			case !r.Interleaved:
			case x.Paired > 0:
				fmt.Fprintf(&b, " %.2f× |", x.Paired)
			default:
				b.WriteString(" – |")
			}
			b.WriteString("\n")
		}
	}
	b.WriteString("\nNotes:\n")
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	return b.String()
}

var palette = map[bool]color.RGBA{true: {0x5b, 0x7f, 0xa6, 0xff}, false: {0xe0, 0x8a, 0x2c, 0xff}} // kernel blue, tortie orange

func isKernel(setup string) bool { return strings.HasPrefix(setup, "kernel") }

// Chart draws one panel per headline metric with a bar per setup: kernel
// in blue, tortie in orange, value at the bar's end.
func (r *Report) Chart(path string) error {
	metrics := []struct{ metric, title string }{
		{MetricPPS, "64-byte frames delivered per second, unpaced flood (higher is better)"},
		{MetricPPSZeroLoss, "64-byte frames per second forwarded with under 0.1% loss (higher is better)"},
		{MetricIMIXGbpsZeroLoss, "IMIX Gbit/s forwarded with under 0.1% loss (higher is better)"},
		{MetricTCP1, "TCP Gbit/s, 1 stream (higher is better)"},
		{MetricTCP2, "TCP Gbit/s, 2 streams (higher is better)"},
		{MetricCPU, "CPU ns per delivered packet (lower is better)"},
		{MetricTCP1CPUMachine, "CPU seconds per Gbit, TCP 1 stream, whole machine (lower is better)"},
		{MetricLatP99, "latency p99 in microseconds, idle (lower is better)"},
		{MetricScaleTCP, "TCP Gbit/s, two pairs at once on one node (higher is better)"},
		{MetricScaleOnePair, "TCP Gbit/s, one pair, four streams, on one node (higher is better)"},
	}
	// Only the panels this run measured.
	metrics = slices.DeleteFunc(metrics, func(m struct{ metric, title string }) bool {
		return !slices.ContainsFunc(r.Measurements, func(x Measurement) bool { return x.Metric == m.metric })
	})
	// Each panel shows the setups that measured its metric.
	panels := make([][]string, len(metrics))
	const width, left, barH, gap, pad = 900, 130, 16, 4, 28
	height := 40
	for i, m := range metrics {
		for _, s := range r.setups() {
			if _, ok := r.value(s, m.metric); ok {
				panels[i] = append(panels[i], s)
			}
		}
		height += pad + len(panels[i])*(barH+gap) + 12
	}
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	text := func(x, y int, s string, c color.Color) {
		d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	text(10, 20, fmt.Sprintf("tortie vs the Linux kernel, same machine, same run (%d CPUs, %s, median of %d)", r.CPUs, r.Duration, r.Reps), color.Black)
	y := 40
	for i, m := range metrics {
		setups := panels[i]
		text(10, y+16, m.title, color.Black)
		var top float64
		for _, s := range setups {
			if v, ok := r.value(s, m.metric); ok && v > top {
				top = v
			}
		}
		by := y + pad
		for _, s := range setups {
			text(10, by+12, s, color.Gray{0x40})
			if v, ok := r.value(s, m.metric); ok && top > 0 {
				w := int(float64(width-left-90) * v / top)
				draw.Draw(img, image.Rect(left, by, left+max(w, 1), by+barH), image.NewUniform(palette[isKernel(s)]), image.Point{}, draw.Src)
				text(left+w+6, by+12, format(v), color.Black)
			} else {
				text(left, by+12, "not measured", color.Gray{0x80})
			}
			by += barH + gap
		}
		y += pad + len(setups)*(barH+gap) + 12
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
