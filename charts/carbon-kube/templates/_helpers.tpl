{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "carbon-kube.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, plus the chart name unless it is already in it.
*/}}
{{- define "carbon-kube.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of one component's resources: "<fullname>-<component>". Call with
(dict "root" $ "component" "scheduler").
*/}}
{{- define "carbon-kube.componentName" -}}
{{- printf "%s-%s" (include "carbon-kube.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "carbon-kube.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "carbon-kube.labels" -}}
helm.sh/chart: {{ include "carbon-kube.chart" . }}
app.kubernetes.io/name: {{ include "carbon-kube.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: carbon-kube
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of one component's resources. Call with (dict "root" $ "component" "poller").
*/}}
{{- define "carbon-kube.componentLabels" -}}
{{ include "carbon-kube.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one component (stable across upgrades).
*/}}
{{- define "carbon-kube.selectorLabels" -}}
app.kubernetes.io/name: {{ include "carbon-kube.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The carbon-kube image reference.
*/}}
{{- define "carbon-kube.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
kube-scheduler image: the configured tag, or the cluster's version reduced to
vMAJOR.MINOR.PATCH (provider suffixes such as "-eks-..." are dropped).
*/}}
{{- define "carbon-kube.kubeSchedulerImage" -}}
{{- $img := .Values.scheduler.kubeScheduler.image }}
{{- $tag := $img.tag }}
{{- if not $tag }}
{{- $v := semver .Capabilities.KubeVersion.Version }}
{{- $tag = printf "v%d.%d.%d" $v.Major $v.Minor $v.Patch }}
{{- end }}
{{- printf "%s:%s" $img.repository $tag }}
{{- end }}

{{/*
Name of the Secret with provider credentials.
*/}}
{{- define "carbon-kube.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- include "carbon-kube.componentName" (dict "root" . "component" "secrets") }}
{{- end }}
{{- end }}

{{/*
Whether the chart creates its own Secret (some credential was given).
*/}}
{{- define "carbon-kube.createSecret" -}}
{{- if and (not .Values.existingSecret) (or .Values.electricityMaps.apiKey .Values.noaa.apiKey .Values.watttime.username .Values.watttime.password) }}true{{- end }}
{{- end }}

{{/*
Global flags of every carbon-kube container.
*/}}
{{- define "carbon-kube.globalArgs" -}}
- --log-format={{ .Values.global.logFormat }}
{{- if .Values.global.debug }}
- --debug
{{- end }}
{{- end }}

{{/*
Pod-level settings shared by every pod: security context, pull secrets.
*/}}
{{- define "carbon-kube.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Placement settings of a component's pod. Call with the component's values.
*/}}
{{- define "carbon-kube.podPlacement" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/*
Environment variables with the provider credentials, each from the Secret and
optional: a key missing from the Secret leaves the variable unset and the
provider is skipped by the chain. Values never appear in arguments or ConfigMaps.
*/}}
{{- define "carbon-kube.credentialEnv" -}}
{{- $secret := include "carbon-kube.secretName" . }}
{{- range $var, $key := dict "ELECTRICITY_MAPS_API_KEY" "electricity-maps-key" "NOAA_API_KEY" "noaa-key" "WATTTIME_USERNAME" "watttime-username" "WATTTIME_PASSWORD" "watttime-password" }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end }}
