package bench

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// lossCurve is a fake setup that forwards everything up to capacity
// frames/s and loses what is above it; the generator reaches offeredShare
// of any rate (1 when 0).
type lossCurve struct {
	capacity     float64
	offeredShare float64
	rates        []float64
}

func (c *lossCurve) trial(_ context.Context, rate float64) (Trial, error) {
	c.rates = append(c.rates, rate)
	share := c.offeredShare
	if share == 0 {
		share = 1
	}
	offered := rate * share
	delivered := min(offered, c.capacity)
	return Trial{Target: rate, Offered: offered, Delivered: delivered, LossPct: 100 * (1 - delivered/offered)}, nil
}

func TestSearchConvergesWithinSteps(t *testing.T) {
	for _, tc := range []struct {
		name              string
		capacity, start   float64
		max               float64
		steps, wantTrials int
	}{
		// The unpaced flood delivered more than the setup forwards
		// without loss (tortie's TAP queue drops the rest).
		{"start above capacity", 100_000, 260_000, 1_000_000, 7, 7},
		{"start above capacity, 6 steps", 123_456, 200_000, 200_000, 6, 6},
		// The setup forwards more paced than flooded: the search goes up
		// before it bisects.
		{"start below capacity", 300_000, 120_000, 1_000_000, 7, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &lossCurve{capacity: tc.capacity}
			res, err := SearchZeroLoss(context.Background(), c.trial, SearchOptions{Start: tc.start, Max: tc.max, Steps: tc.steps})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Trials) != tc.wantTrials || len(c.rates) != tc.wantTrials {
				t.Fatalf("%d trials (%d run), want %d", len(res.Trials), len(c.rates), tc.wantTrials)
			}
			if res.Rate > tc.capacity {
				t.Fatalf("rate %.0f above the capacity %.0f: a trial with loss passed", res.Rate, tc.capacity)
			}
			// Each trial after the first that failed halves the bracket
			// around the capacity: [highest pass, lowest fail].
			first := -1
			for i, r := range c.rates {
				if r > tc.capacity {
					first = i
					break
				}
			}
			if first < 0 {
				t.Fatalf("no trial above the capacity: rates %v", c.rates)
			}
			width := c.rates[first]
			if first > 0 {
				width -= c.rates[first-1]
			}
			width /= float64(int(1) << (len(c.rates) - first - 1))
			var lo, hi float64
			for _, r := range c.rates {
				if r <= tc.capacity {
					lo = max(lo, r)
				} else if hi == 0 || r < hi {
					hi = r
				}
			}
			if lo != res.Rate {
				t.Fatalf("rate %.0f, want the highest passing trial %.0f", res.Rate, lo)
			}
			if hi-lo > width || tc.capacity-res.Rate > width {
				t.Fatalf("bracket [%.0f, %.0f] around the capacity %.0f is wider than %.0f after %d trials (rates %v)",
					lo, hi, tc.capacity, width, len(c.rates), c.rates)
			}
			if res.Best.LossPct != 0 || res.Note != "" {
				t.Fatalf("best %+v, note %q", res.Best, res.Note)
			}
		})
	}
}

func TestSearchExactBisection(t *testing.T) {
	// From a failing start, the rates are those of a plain bisection of
	// [0, start].
	c := &lossCurve{capacity: 70_000}
	res, err := SearchZeroLoss(context.Background(), c.trial, SearchOptions{Start: 128_000, Steps: 5})
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{128_000, 64_000, 96_000, 80_000, 72_000}
	if len(c.rates) != len(want) {
		t.Fatalf("rates %v, want %v", c.rates, want)
	}
	for i := range want {
		if c.rates[i] != want[i] {
			t.Fatalf("rates %v, want %v", c.rates, want)
		}
	}
	if res.Rate != 64_000 {
		t.Fatalf("rate %.0f, want 64000", res.Rate)
	}
}

func TestSearchLossAtThreshold(t *testing.T) {
	// Loss exactly at ZeroLossPct fails ("under 0.1%"); just under passes.
	for _, tc := range []struct {
		loss float64
		want float64
	}{
		{ZeroLossPct, 50_000},
		{ZeroLossPct - 0.0001, 100_000},
	} {
		trial := func(_ context.Context, rate float64) (Trial, error) {
			t := Trial{Target: rate, Offered: rate, Delivered: rate}
			if rate > 60_000 {
				t.LossPct = tc.loss
				t.Delivered = rate * (1 - tc.loss/100)
			}
			return t, nil
		}
		res, err := SearchZeroLoss(context.Background(), trial, SearchOptions{Start: 100_000, Steps: 2})
		if err != nil {
			t.Fatal(err)
		}
		if res.Rate != tc.want {
			t.Errorf("loss %g%% above 60k/s: rate %.0f, want %.0f (trials %+v)", tc.loss, res.Rate, tc.want, res.Trials)
		}
	}
}

func TestSearchLossEverywhere(t *testing.T) {
	// A setup that loses at every rate reports 0, says so, and names the
	// lowest rate tried.
	trial := func(_ context.Context, rate float64) (Trial, error) {
		return Trial{Target: rate, Offered: rate, Delivered: rate * 0.9, LossPct: 10}, nil
	}
	res, err := SearchZeroLoss(context.Background(), trial, SearchOptions{Start: 64_000, Steps: 7})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rate != 0 || res.Best != (Trial{}) {
		t.Fatalf("rate %.0f, best %+v: want 0 and none", res.Rate, res.Best)
	}
	if len(res.Trials) != 7 {
		t.Fatalf("%d trials, want 7", len(res.Trials))
	}
	if !strings.Contains(res.Note, "every rate tried") || !strings.Contains(res.Note, "down to 1000/s") || !strings.Contains(res.Note, "reported as 0") {
		t.Fatalf("note %q", res.Note)
	}
}

func TestSearchGeneratorShortfall(t *testing.T) {
	// A trial whose generator reached under MinOfferedShare of the rate
	// sends the search lower, as a loss does, but counts at the rate it
	// reached when it lost nothing; the note says why the search went
	// lower.
	c := &lossCurve{capacity: 1e9, offeredShare: 0.9}
	res, err := SearchZeroLoss(context.Background(), c.trial, SearchOptions{Start: 100_000, Max: 1e6, Steps: 3})
	if err != nil {
		t.Fatal(err)
	}
	if want := []float64{100_000, 50_000, 25_000}; len(c.rates) != 3 || c.rates[1] != want[1] || c.rates[2] != want[2] {
		t.Fatalf("rates %v, want %v", c.rates, want)
	}
	if res.Rate != 90_000 || res.Best.Target != 100_000 {
		t.Fatalf("rate %.0f (best %+v), want 90000 from the first trial", res.Rate, res.Best)
	}
	if !strings.Contains(res.Note, "in 3 of 3 trials the generator reached under 97%") {
		t.Fatalf("note %q", res.Note)
	}
}

func TestSearchStopsAtMax(t *testing.T) {
	c := &lossCurve{capacity: 1e9}
	res, err := SearchZeroLoss(context.Background(), c.trial, SearchOptions{Start: 100_000, Max: 300_000, Steps: 7})
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{100_000, 200_000, 300_000}
	if len(c.rates) != len(want) || c.rates[2] != want[2] || c.rates[1] != want[1] {
		t.Fatalf("rates %v, want %v", c.rates, want)
	}
	if res.Rate != 300_000 || !strings.Contains(res.Note, "highest rate the search tries") {
		t.Fatalf("rate %.0f, note %q", res.Rate, res.Note)
	}
}

func TestSearchBadInput(t *testing.T) {
	c := &lossCurve{capacity: 1}
	for _, o := range []SearchOptions{{Start: 0, Steps: 3}, {Start: -5, Steps: 3}, {Start: 100, Steps: 0}} {
		if _, err := SearchZeroLoss(context.Background(), c.trial, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	if len(c.rates) != 0 {
		t.Fatalf("trials run on bad input: %v", c.rates)
	}
	boom := errors.New("boom")
	_, err := SearchZeroLoss(context.Background(), func(context.Context, float64) (Trial, error) { return Trial{}, boom },
		SearchOptions{Start: 100, Steps: 3})
	if !errors.Is(err, boom) {
		t.Fatalf("error %v, want the trial's", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := SearchZeroLoss(ctx, c.trial, SearchOptions{Start: 100, Steps: 3}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: error %v", err)
	}
}
