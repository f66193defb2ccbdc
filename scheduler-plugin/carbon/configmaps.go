package carbon

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// The ConfigMaps the extender reads too (carbon-kube-model's keys).
const (
	snapshotConfigMap = "carbon-intensity-data"
	snapshotKey       = "carbon-intensity.json"
	configConfigMap   = "carbon-kube-config"
)

// How long the plugin waits for its first list of the ConfigMaps at start.
const syncTimeout = 30 * time.Second

// watchConfigMaps watches the two ConfigMaps in namespace (a watch, not a
// read per pod) and hands their content to the policy. Until the first list
// arrives, or when they are absent, carbon is not applied (neutral). Each is
// watched by name (a metadata.name field selector), so RBAC can grant just
// those two names.
func (p *Plugin) watchConfigMaps(ctx context.Context, client kubernetes.Interface, namespace string) error {
	var synced []cache.InformerSynced
	for _, name := range []string{snapshotConfigMap, configConfigMap} {
		factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			}))
		inf := factory.Core().V1().ConfigMaps().Informer()
		if err := p.handleConfigMaps(inf); err != nil {
			return fmt.Errorf("%s: watching ConfigMap %s/%s: %w", Name, namespace, name, err)
		}
		factory.Start(ctx.Done())
		synced = append(synced, inf.HasSynced)
	}
	syncCtx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), synced...) {
		klog.FromContext(ctx).Info("ConfigMaps not listed yet; scheduling without carbon until they are", "namespace", namespace)
	}
	return nil
}

func (p *Plugin) handleConfigMaps(inf cache.SharedIndexInformer) error {
	apply := func(obj any, deleted bool) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		cm, ok := obj.(*v1.ConfigMap)
		if !ok {
			return
		}
		switch cm.Name {
		case snapshotConfigMap:
			p.applySnapshot(cm, deleted)
		case configConfigMap:
			p.applyConfig(cm, deleted)
		}
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { apply(obj, false) },
		UpdateFunc: func(_, obj any) { apply(obj, false) },
		DeleteFunc: func(obj any) { apply(obj, true) },
	})
	return err
}

func (p *Plugin) applySnapshot(cm *v1.ConfigMap, deleted bool) {
	logger := klog.Background()
	var text []byte
	present := !deleted
	if present {
		if s, ok := cm.Data[snapshotKey]; ok {
			text = []byte(s)
		} else {
			present = false
		}
	}
	zones, ignored, err := p.policy.setSnapshot(text, present)
	p.generation.Add(1)
	if err != nil {
		logger.Error(err, "snapshot ConfigMap unreadable; keeping the previous snapshot (it turns neutral when stale)")
		return
	}
	for _, e := range ignored {
		logger.Info("ignoring a bad zone in the snapshot", "error", e)
	}
	intensity.Reset()
	if !present {
		logger.Info("snapshot ConfigMap absent: scheduling without carbon (neutral)")
		return
	}
	for _, r := range zones {
		intensity.WithLabelValues(r.Zone, r.Source).Set(r.GPerKwh)
	}
	logger.Info("carbon snapshot updated", "zones", len(zones))
}

func (p *Plugin) applyConfig(cm *v1.ConfigMap, deleted bool) {
	var data map[string]string
	if !deleted {
		data = cm.Data
		if data == nil {
			data = map[string]string{}
		}
	}
	eff, err := p.policy.setConfig(data)
	p.generation.Add(1)
	if err != nil {
		configErrors.Inc()
		klog.Background().Error(err, "rejected runtime override; keeping the previous settings")
		return
	}
	observeSettings(eff)
	klog.Background().Info("placement settings applied", "config", eff)
}
