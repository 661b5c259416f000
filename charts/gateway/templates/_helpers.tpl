{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name; the release name alone when it already contains the chart name. */}}
{{- define "gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gateway.labels" -}}
helm.sh/chart: {{ include "gateway.chart" . }}
{{ include "gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Ports the gateway binds, read from its configuration (the gateway's own defaults otherwise). */}}
{{- define "gateway.port" -}}
{{- dig "listen" "port" 8080 .Values.config | int -}}
{{- end -}}

{{- define "gateway.adminPort" -}}
{{- dig "admin" "port" 9901 .Values.config | int -}}
{{- end -}}

{{- define "gateway.drainDelayMs" -}}
{{- dig "shutdown" "drainDelayMs" 5000 .Values.config | int -}}
{{- end -}}

{{- define "gateway.shutdownTimeoutMs" -}}
{{- dig "shutdown" "timeoutMs" 30000 .Values.config | int -}}
{{- end -}}

{{/* The longest upstream request deadline (upstreams.*.timeouts.requestMs, 60000 by default). */}}
{{- define "gateway.maxRequestMs" -}}
{{- $max := 0 -}}
{{- range $name, $upstream := (.Values.config.upstreams | default dict) -}}
{{- $ms := dig "timeouts" "requestMs" 60000 $upstream | int -}}
{{- if gt $ms $max -}}{{- $max = $ms -}}{{- end -}}
{{- end -}}
{{- $max -}}
{{- end -}}

{{/* Whole seconds of the preStop sleep: the drain delay, rounded up. */}}
{{- define "gateway.preStopSeconds" -}}
{{- div (add (include "gateway.drainDelayMs" . | int) 999) 1000 -}}
{{- end -}}

{{/*
The pod must outlive the preStop sleep (while endpoints propagate), then, after SIGTERM, the gateway's
own drain and its requests in flight, which it bounds by shutdown.timeoutMs (checked below to cover
the drain delay plus the longest request). Past the grace period the kubelet sends SIGKILL.
*/}}
{{- define "gateway.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- .Values.terminationGracePeriodSeconds | int -}}
{{- else -}}
{{- $shutdown := div (add (include "gateway.shutdownTimeoutMs" . | int) 999) 1000 -}}
{{- add (include "gateway.preStopSeconds" . | int) $shutdown (.Values.terminationGraceMarginSeconds | int) -}}
{{- end -}}
{{- end -}}

{{/* Settings the probes and the drain depend on; rendering stops with a clear message when they are off. */}}
{{- define "gateway.checkConfig" -}}
{{- $admin := .Values.config.admin | default dict -}}
{{- if eq (toString (dig "enabled" true $admin)) "false" -}}
{{- fail "config.admin.enabled must be true: the liveness and readiness probes use the admin listener" -}}
{{- end -}}
{{- $host := dig "host" "127.0.0.1" $admin -}}
{{- if not (has $host (list "0.0.0.0" "::")) -}}
{{- fail (printf "config.admin.host is %q: it must be 0.0.0.0 (or ::) so the kubelet's probes and Prometheus reach it" $host) -}}
{{- end -}}
{{- $drain := include "gateway.drainDelayMs" . | int -}}
{{- $request := include "gateway.maxRequestMs" . | int -}}
{{- $timeout := include "gateway.shutdownTimeoutMs" . | int -}}
{{- if lt $timeout (add $drain $request) -}}
{{- fail (printf "config.shutdown.timeoutMs (%d) must be at least shutdown.drainDelayMs (%d) plus the longest upstream timeouts.requestMs (%d), or requests in flight are cut at shutdown" $timeout $drain $request) -}}
{{- end -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- $needed := add (include "gateway.preStopSeconds" . | int) (div (add $drain $request 999) 1000) -}}
{{- if le (.Values.terminationGracePeriodSeconds | int) $needed -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed the preStop sleep plus the drain delay plus the longest request timeout (%d s)" (.Values.terminationGracePeriodSeconds | int) $needed) -}}
{{- end -}}
{{- end -}}
{{- end -}}
