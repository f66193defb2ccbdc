package carbon

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Args are the plugin's args in the KubeSchedulerConfiguration
// (profiles[].pluginConfig[] with name CarbonKube). Unset fields take the
// policy's defaults; the carbon-kube-config ConfigMap's keys override them
// at run time, as for the extender.
type Args struct {
	metav1.TypeMeta `json:",inline"`
	// Namespace of the carbon-intensity-data and carbon-kube-config
	// ConfigMaps (default carbon-kube).
	Namespace string `json:"namespace,omitempty"`
	// Threshold in g/kWh: nodes in zones above it are filtered out.
	Threshold *float64 `json:"threshold,omitempty"`
	// CarbonWeight and PerformanceWeight (0-100) weigh the score's parts.
	CarbonWeight      *int64 `json:"carbonWeight,omitempty"`
	PerformanceWeight *int64 `json:"performanceWeight,omitempty"`
	// MaxDataAgeSeconds: older data is stale.
	MaxDataAgeSeconds *int64 `json:"maxDataAgeSeconds,omitempty"`
	// OnNoGreenNode: failOpen (default) or reject.
	OnNoGreenNode string `json:"onNoGreenNode,omitempty"`
	// StaleData: neutral (default) or useLastValue.
	StaleData string `json:"staleData,omitempty"`
	// EstimatedData: use (default) or neutral.
	EstimatedData string `json:"estimatedData,omitempty"`
	// RegionZones: the operator's region -> zone map (aws/us-east-1: US-MIDA-PJM).
	RegionZones map[string]string `json:"regionZones,omitempty"`
}

// DefaultNamespace of the ConfigMaps.
const DefaultNamespace = "carbon-kube"

func (a *Args) defaults() {
	if a.Namespace == "" {
		a.Namespace = DefaultNamespace
	}
}

// policyJSON is the args in the policy's form (carbon-kube-ffi PolicyArgs);
// the policy validates them and names every bad field.
func (a *Args) policyJSON() ([]byte, error) {
	placement := map[string]any{}
	if a.Threshold != nil {
		placement["threshold"] = *a.Threshold
	}
	if a.CarbonWeight != nil {
		placement["carbonWeight"] = *a.CarbonWeight
	}
	if a.PerformanceWeight != nil {
		placement["performanceWeight"] = *a.PerformanceWeight
	}
	if a.MaxDataAgeSeconds != nil {
		placement["maxDataAgeSeconds"] = *a.MaxDataAgeSeconds
	}
	for k, v := range map[string]string{"onNoGreenNode": a.OnNoGreenNode, "staleData": a.StaleData, "estimatedData": a.EstimatedData} {
		if v != "" {
			placement[k] = v
		}
	}
	zones := a.RegionZones
	if zones == nil {
		zones = map[string]string{}
	}
	return json.Marshal(map[string]any{"placement": placement, "regionZones": zones})
}
