{{/* The release's name for Pier's objects: "pier" for a release named pier, else <release>-pier. */}}
{{- define "pier.fullname" -}}
{{- if contains "pier" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-pier" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pier.selectorLabels" -}}
app.kubernetes.io/name: pier
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pier.labels" -}}
{{ include "pier.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "pier.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pier.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pier.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The label the leader puts on its own Pod; the xDS Service selects it. */}}
{{- define "pier.leaderLabel" -}}
kafka.pier.dev/leader: "true"
{{- end -}}

{{/* What Pier does to the objects of the KafkaClusters it manages (from src/controller). */}}
{{- define "pier.clusterRules" -}}
# KafkaClusters: watched; the legacy finalizer removed (patch); status written (patch); read
# fresh (get) by the alert webhook, whose actions change the spec (patch, as pier-alerts).
- apiGroups: [kafka.pier.dev]
  resources: [kafkaclusters]
  verbs: [get, list, watch, patch]
- apiGroups: [kafka.pier.dev]
  resources: [kafkaclusters/status]
  verbs: [patch]
# KafkaTopics: watched; the finalizer added and removed (patch); status written (patch).
- apiGroups: [kafka.pier.dev]
  resources: [kafkatopics]
  verbs: [list, watch, patch]
- apiGroups: [kafka.pier.dev]
  resources: [kafkatopics/status]
  verbs: [patch]
# KafkaUsers: watched (also to know whether a cluster needs its authorizer); the finalizer added
# and removed (patch); status written (patch). Their Secrets are in the Secrets rule below.
- apiGroups: [kafka.pier.dev]
  resources: [kafkausers]
  verbs: [list, watch, patch]
- apiGroups: [kafka.pier.dev]
  resources: [kafkausers/status]
  verbs: [patch]
# Each cluster's objects: watched (list, watch), applied server-side (create, patch), and
# deleted when the plan no longer has them (a broker's Pod in a roll or after its drain).
- apiGroups: [""]
  resources: [pods, configmaps, services, persistentvolumeclaims]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
# Secrets, one rule, each verb for a reason: get reads a Secret a spec references (a provided
# CA, configFrom values, SCRAM passwords) by name; list and watch follow Pier's own (the
# clusters' CAs and certificates) and the metadata of referenced ones (no value is listed: a
# change wakes the clusters that read it); create and patch write Pier's own.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
# Events on KafkaClusters and KafkaTopics (kube-rs' recorder creates them and patches a repeated one).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
