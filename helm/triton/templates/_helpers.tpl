{{/* Chart name, cut to fit DNS labels. */}}
{{- define "triton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name; track suffixes ("-stable", "-canary") must still fit 63 chars. */}}
{{- define "triton.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "triton.selectorLabels" -}}
app.kubernetes.io/name: {{ include "triton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "triton.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "triton.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: triton-ops
{{- end -}}

{{/* The image, pinned by digest when one is given. */}}
{{- define "triton.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (required "image.tag or image.digest is required" .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Name of a model's rollout state ConfigMap and Lease (triton_ops.k8s.names.object_name). */}}
{{- define "triton.rolloutObject" -}}
{{- printf "triton-ops-rollout-%s" (.name | lower | replace "_" "-" | replace "." "-") | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* {"model": [versions]} served by one track, as compact JSON. With keepRolledOutVersions,
a model already in the live Deployment keeps the versions `triton-ops k8s rollout` gave it,
so `helm upgrade` never undoes a promotion (lookup is empty offline and on install). */}}
{{- define "triton.trackVersions" -}}
{{- $track := .track -}}
{{- $live := dict -}}
{{- if .root.Values.keepRolledOutVersions -}}
{{- $dep := lookup "apps/v1" "Deployment" .root.Release.Namespace (printf "%s-%s" (include "triton.fullname" .root) $track) -}}
{{- $text := dig "spec" "template" "metadata" "annotations" "triton-ops.io/versions" "" $dep -}}
{{- if $text -}}
{{- $live = fromJson $text -}}
{{- end -}}
{{- end -}}
{{- $out := dict -}}
{{- range .root.Values.models -}}
{{- $versions := index (required (printf "models[%s].versions is required" .name) .versions) $track -}}
{{- $_ := set $out .name (required (printf "models[%s].versions.%s is required" .name $track) $versions) -}}
{{- if hasKey $live .name -}}
{{- $_ := set $out .name (get $live .name) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The Secret holding the key of Triton's restricted APIs (key `api-key`). */}}
{{- define "triton.apiKeySecret" -}}
{{- .Values.restrictedApi.existingSecret | default (printf "%s-api-key" (include "triton.fullname" .)) -}}
{{- end -}}
