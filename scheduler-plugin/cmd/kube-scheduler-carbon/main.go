// kube-scheduler-carbon is the stock kube-scheduler (the pinned Kubernetes
// release) with Carbon-Kube's framework plugin compiled in. Enable it in a
// profile of the KubeSchedulerConfiguration (deploy/scheduler/
// kube-scheduler-plugin-config.yaml); every other flag and setting is
// kube-scheduler's own.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	"carbon-kube.dev/scheduler-plugin/carbon"
)

func main() {
	command := app.NewSchedulerCommand(app.WithPlugin(carbon.Name, carbon.New))
	os.Exit(cli.Run(command))
}
