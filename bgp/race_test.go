//go:build race

package bgp

// raceEnabled: this test binary runs under the race detector.
const raceEnabled = true
