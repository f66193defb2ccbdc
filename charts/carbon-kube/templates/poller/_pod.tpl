{{/*
The poller's container, shared by the CronJob and the Deployment. Call with
(dict "root" $ "daemon" true|false).
*/}}
{{- define "carbon-kube.pollerContainer" -}}
{{- $root := .root }}
{{- $p := $root.Values.carbonPoller }}
- name: poller
  image: {{ include "carbon-kube.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  args:
    - poller
    {{- if .daemon }}
    - --interval={{ $p.interval }}
    - --listen=0.0.0.0:{{ $p.metricsPort }}
    {{- else }}
    - --once
    {{- end }}
    - --zones={{ join "," $root.Values.electricityMaps.zones }}
    - --namespace={{ $root.Release.Namespace }}
    - --max-data-age={{ $p.maxDataAge }}
    - --provider-timeout={{ $p.providerTimeout }}
    {{- range $p.chains }}
    - --chain={{ . }}
    {{- end }}
    {{- with $p.userAgent }}
    - --user-agent={{ . }}
    {{- end }}
    {{- with (include "carbon-kube.globalArgs" $root | trim) }}{{ . | nindent 4 }}{{- end }}
  env:
    {{- with (include "carbon-kube.credentialEnv" $root | trim) }}{{ . | nindent 4 }}{{- end }}
  {{- if .daemon }}
  ports:
    - name: http-metrics
      containerPort: {{ $p.metricsPort }}
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /healthz
      port: http-metrics
    periodSeconds: 10
  readinessProbe:
    httpGet:
      path: /readyz
      port: http-metrics
    periodSeconds: 10
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.containerSecurityContext | nindent 4 }}
  resources:
    {{- toYaml $p.resources | nindent 4 }}
{{- end }}
