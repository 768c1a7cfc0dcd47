package metrics

import "github.com/prometheus/client_golang/prometheus"

var invalidDesc = prometheus.NewDesc("tortie_datastore_invalid_records_total",
	"Datastore records skipped because they do not decode or validate, by kind (each revision of a record counted once).", []string{"kind"}, nil)

// InvalidCounts reads the invalid-record counts by kind at scrape time.
type InvalidCounts func() map[string]uint64

type invalidCollector struct{ counts InvalidCounts }

// InvalidRecords exports tortie_datastore_invalid_records_total from counts.
func InvalidRecords(counts InvalidCounts) prometheus.Collector { return invalidCollector{counts} }

func (c invalidCollector) Describe(ch chan<- *prometheus.Desc) { ch <- invalidDesc }

func (c invalidCollector) Collect(ch chan<- prometheus.Metric) {
	for kind, n := range c.counts() {
		ch <- prometheus.MustNewConstMetric(invalidDesc, prometheus.CounterValue, float64(n), kind)
	}
}

var policyCompileDesc = prometheus.NewDesc("tortie_policy_compilations_total",
	"Compilations of the datastore's network policy, by result: installed, or failed (the previous policy stays in force).", []string{"result"}, nil)

// PolicyCounts reads how many policy compilations were installed and how
// many failed, at scrape time.
type PolicyCounts func() (installed, failed uint64)

type policyCompileCollector struct{ counts PolicyCounts }

// PolicyCompilations exports tortie_policy_compilations_total from counts.
func PolicyCompilations(counts PolicyCounts) prometheus.Collector {
	return policyCompileCollector{counts}
}

func (c policyCompileCollector) Describe(ch chan<- *prometheus.Desc) { ch <- policyCompileDesc }

func (c policyCompileCollector) Collect(ch chan<- prometheus.Metric) {
	installed, failed := c.counts()
	ch <- prometheus.MustNewConstMetric(policyCompileDesc, prometheus.CounterValue, float64(installed), "installed")
	ch <- prometheus.MustNewConstMetric(policyCompileDesc, prometheus.CounterValue, float64(failed), "failed")
}
