package carbon

import (
	"sync"
	"time"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// The metrics, in kube-scheduler's own registry (its /metrics), with the
// extender's names and labels (crates/carbon-kube-extender/src/metrics.rs),
// so dashboards and alerts work with either mode.
var (
	decisions = metrics.NewCounterVec(&metrics.CounterOpts{
		Name:           "carbon_kube_scheduler_decisions_total",
		Help:           "Carbon decisions by verb (filter, prioritize) and outcome",
		StabilityLevel: metrics.ALPHA,
	}, []string{"verb", "outcome"})
	latency = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Name:           "carbon_kube_scheduler_latency_seconds",
		Help:           "Time to decide a filter or prioritize step for one pod, seconds",
		Buckets:        metrics.ExponentialBuckets(0.000_05, 2, 16),
		StabilityLevel: metrics.ALPHA,
	}, []string{"verb"})
	configErrors = metrics.NewCounter(&metrics.CounterOpts{
		Name:           "carbon_kube_scheduler_config_errors_total",
		Help:           "Runtime overrides from the carbon-kube-config ConfigMap that were rejected",
		StabilityLevel: metrics.ALPHA,
	})
	events = metrics.NewCounterVec(&metrics.CounterOpts{
		Name:           "carbon_kube_scheduler_events_total",
		Help:           "Kubernetes Events on pods whose placement carbon changed (plugin: recorded = handed to kube-scheduler's event broadcaster)",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	settings = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Name:           "carbon_kube_scheduler_settings",
		Help:           "Effective placement settings (threshold in g/kWh, weights, max data age in seconds, fail_open 1 or 0, stale_neutral, estimated_neutral)",
		StabilityLevel: metrics.ALPHA,
	}, []string{"setting"})
	intensity = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Name:           "carbon_kube_carbon_intensity_current",
		Help:           "Current carbon intensity per zone, g/kWh",
		StabilityLevel: metrics.ALPHA,
	}, []string{"zone", "source"})

	registerOnce sync.Once
)

func registerMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(decisions, latency, configErrors, events, settings, intensity)
	})
}

func observe(verb string, start time.Time) {
	latency.WithLabelValues(verb).Observe(time.Since(start).Seconds())
}

func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// observeSettings exports the effective settings (the policy's raw form).
func observeSettings(raw map[string]any) {
	num := func(k string) (float64, bool) {
		v, ok := raw[k].(float64)
		return v, ok
	}
	for k, name := range map[string]string{
		"threshold": "threshold", "carbonWeight": "carbon_weight",
		"performanceWeight": "performance_weight", "maxDataAgeSeconds": "max_data_age_seconds",
	} {
		if v, ok := num(k); ok {
			settings.WithLabelValues(name).Set(v)
		}
	}
	settings.WithLabelValues("fail_open").Set(flag(raw["onNoGreenNode"] == "failOpen"))
	settings.WithLabelValues("stale_neutral").Set(flag(raw["staleData"] == "neutral"))
	settings.WithLabelValues("estimated_neutral").Set(flag(raw["estimatedData"] == "neutral"))
}
