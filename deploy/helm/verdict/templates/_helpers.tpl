{{- define "verdict.labels" -}}
app.kubernetes.io/name: verdict
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "verdict.selector" -}}
app.kubernetes.io/name: verdict
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "verdict.fullname" -}}
{{- if eq .Release.Name "verdict" -}}verdict{{- else -}}{{ printf "%s-verdict" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "verdict.tlsSecret" -}}
{{- if .Values.certificates.provided.secretName -}}{{ .Values.certificates.provided.secretName }}{{- else -}}{{ include "verdict.fullname" . }}-tls{{- end -}}
{{- end -}}

{{/*
The policies folder as "key=path" lines: ConfigMap keys cannot hold a '/', so each file is
stored as folder.name and mounted back at its path (folders place data documents in `data`).
*/}}
{{- define "verdict.policyFiles" -}}
{{- if .Values.policies.shipped }}
{{- range $path, $_ := .Files.Glob "policies/**" }}
{{- $rel := trimPrefix "policies/" $path }}
{{- if not (hasKey $.Values.policies.files $rel) }}
{{ $rel | replace "/" "." }}={{ $rel }}
{{- end }}
{{- end }}
{{- end }}
{{- range $rel, $_ := .Values.policies.files }}
{{ $rel | replace "/" "." }}={{ $rel }}
{{- end }}
{{- if .Values.imagePolicies }}
image-policies.yaml=image-policies.yaml
{{- end }}
{{- end -}}
