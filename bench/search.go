package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
)

// ZeroLossPct is the loss under which a trial counts as forwarded without
// loss. RFC 2544 asks for none; on a shared machine a single dropped frame
// among millions would decide it, so a rate passes below 0.1 % lost.
const ZeroLossPct = 0.1

// MinOfferedShare is how much of the rate asked a trial's generator must
// reach for the search to go higher: below it the machine could not carry
// the rate (with the kernel the sender's own CPU does the forwarding), so
// the search goes lower as after a loss. Such a trial still counts, at the
// rate it reached, if it lost under the threshold.
const MinOfferedShare = 0.97

// Trial is one run at a paced rate.
type Trial struct {
	Target    float64 `json:"target"`    // frames per second asked for
	Offered   float64 `json:"offered"`   // frames per second the generator sent
	Delivered float64 `json:"delivered"` // frames per second the receiver got
	LossPct   float64 `json:"lossPct"`
	// DeliveredBits is what arrived, in frame bits (with FCS) per second.
	DeliveredBits float64 `json:"deliveredBits"`
	// SenderDropped is the part of the loss, in frames per second, that
	// the sending pod's interface dropped (a full TAP queue, for
	// tortie); the rest was lost on the way.
	SenderDropped float64 `json:"senderDropped"`
}

// TrialFunc offers frames at rate per second for one trial.
type TrialFunc func(ctx context.Context, rate float64) (Trial, error)

// SearchOptions bound a zero-loss search.
type SearchOptions struct {
	// Start is the first rate tried: the rate the unpaced flood
	// delivered.
	Start float64
	// Max is the highest rate tried (the unpaced flood's offered rate,
	// say): while trials pass, the search doubles the rate up to it.
	// Below Start it is Start.
	Max float64
	// Steps is the number of trials at most.
	Steps int
	// MaxLossPct is the loss a trial must stay under (default
	// ZeroLossPct).
	MaxLossPct float64
}

// SearchResult is what a zero-loss search found.
type SearchResult struct {
	// Rate is the highest offered rate, in frames per second, of the
	// trials that lost under MaxLossPct; 0 if none did.
	Rate float64 `json:"rate"`
	// Best is that trial (zero if none).
	Best   Trial   `json:"best"`
	Trials []Trial `json:"trials"`
	// Note says what limited the result, if anything did besides loss.
	Note string `json:"note,omitempty"`
}

// passed tells whether a trial lost under the threshold at the rate asked,
// and so whether the search goes higher.
func (o SearchOptions) passed(t Trial) bool {
	return t.LossPct < o.MaxLossPct && t.Offered >= MinOfferedShare*t.Target
}

// SearchZeroLoss finds the highest rate a setup forwards with under
// MaxLossPct lost, RFC 2544 style, with at most Steps trials: the first at
// Start; while trials pass, twice the rate (up to Max); after the first
// that fails, halfway between the highest rate that passed (or none) and
// the lowest that failed. After n trials of bisection the answer lies
// within Start/2^n below the true rate, so 7 trials from a failing Start
// bracket it to 1/64 of Start. The rate reported is the highest offered
// rate of all trials that lost under the threshold, whether or not their
// generator reached the rate asked.
func SearchZeroLoss(ctx context.Context, trial TrialFunc, o SearchOptions) (SearchResult, error) {
	if !(o.Start > 0) || math.IsInf(o.Start, 0) {
		return SearchResult{}, fmt.Errorf("zero-loss search: start rate %v is not a positive rate", o.Start)
	}
	if o.Steps < 1 {
		return SearchResult{}, errors.New("zero-loss search: needs at least one trial")
	}
	if o.MaxLossPct <= 0 {
		o.MaxLossPct = ZeroLossPct
	}
	if !(o.Max >= o.Start) || math.IsInf(o.Max, 0) {
		o.Max = o.Start
	}
	var res SearchResult
	var passedAny bool
	lo, hi := 0.0, 0.0 // highest target that passed, lowest that failed (0: none yet)
	short := 0         // trials that failed for want of offered rate
	rate := o.Start
	for len(res.Trials) < o.Steps {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		t, err := trial(ctx, rate)
		if err != nil {
			return res, fmt.Errorf("trial at %.0f/s: %w", rate, err)
		}
		t.Target = rate
		res.Trials = append(res.Trials, t)
		if t.LossPct < o.MaxLossPct && (!passedAny || t.Offered > res.Best.Offered) {
			res.Best, passedAny = t, true
		}
		if o.passed(t) {
			lo = rate
		} else {
			hi = rate
			if t.LossPct < o.MaxLossPct {
				short++
			}
		}
		if hi == 0 {
			if rate >= o.Max {
				res.Note = fmt.Sprintf("forwarded the highest rate the search tries (%.0f/s) with under %g%% lost", rate, o.MaxLossPct)
				break
			}
			rate = min(2*rate, o.Max)
		} else {
			rate = (lo + hi) / 2
		}
	}
	if passedAny {
		res.Rate = res.Best.Offered
	} else {
		low := res.Trials[len(res.Trials)-1].Target
		res.Note = fmt.Sprintf("lost %g%% or more at every rate tried, down to %.0f/s: reported as 0", o.MaxLossPct, low)
	}
	if short > 0 {
		res.Note = joinNotes(res.Note, fmt.Sprintf("in %d of %d trials the generator reached under %.0f%% of the rate asked (the machine could not carry it): the search went lower",
			short, len(res.Trials), 100*MinOfferedShare))
	}
	return res, nil
}

func joinNotes(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
