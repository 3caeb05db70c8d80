{{/* Name of the release's objects. */}}
{{- define "callbridge.fullname" -}}
{{- printf "%s-callbridge" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "callbridge.labels" -}}
app.kubernetes.io/name: callbridge
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that select the pods. */}}
{{- define "callbridge.selector" -}}
app.kubernetes.io/name: callbridge
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The Secret holding auth.hs256_secret. */}}
{{- define "callbridge.secretName" -}}
{{- default (include "callbridge.fullname" .) .Values.auth.existingSecret -}}
{{- end -}}
