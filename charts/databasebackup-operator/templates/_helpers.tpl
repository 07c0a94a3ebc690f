{{/* Helm's standard labels. The objects' own labels (app.kubernetes.io/name, part-of) are those of deploy/. */}}
{{- define "dbb.standardLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* The labels of a component's objects: (list $ "dbb-webhook"). */}}
{{- define "dbb.labels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/part-of: databasebackup-operator
{{ include "dbb.standardLabels" $root }}
{{- end }}

{{/* The labels of objects that belong to no one component (the metrics RBAC). */}}
{{- define "dbb.partOfLabels" -}}
app.kubernetes.io/part-of: databasebackup-operator
{{ include "dbb.standardLabels" . }}
{{- end }}

{{- define "dbb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/* image and, when set, imagePullPolicy of a container. */}}
{{- define "dbb.containerImage" -}}
image: {{ include "dbb.image" . | quote }}
{{- with .Values.image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end }}

{{/* Pod spec fields from values: pull secrets and scheduling, each only when set. */}}
{{- define "dbb.podScheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The namespaces a namespaced reconciler watches: those listed, else the release namespace. */}}
{{- define "dbb.watchedNamespaces" -}}
{{- if .Values.namespaced.namespaces }}{{ toJson .Values.namespaced.namespaces }}{{ else }}{{ list .Release.Namespace | toJson }}{{ end }}
{{- end }}

{{/* The reconciler's ServiceAccount as a subject. */}}
{{- define "dbb.reconcilerSubject" -}}
- {kind: ServiceAccount, name: dbb-reconciler, namespace: {{ .Release.Namespace }}}
{{- end }}

{{/* The reconciler's rules in one namespace it watches: the cluster-wide ClusterRole's (reconciler-rbac.yaml, where
each is explained) less policy writes, namespaces, BackupStores and policies. */}}
{{- define "dbb.reconcilerNamespacedRules" -}}
# update: only the replication-slot finalizer (reconciler-admission.yaml refuses any other change).
- apiGroups: [databases.test.io]
  resources: [databasebackups]
  verbs: [get, list, watch, update]
- apiGroups: [databases.test.io]
  resources: [databasebackups/status]
  verbs: [get, patch]
- apiGroups: [databases.test.io]
  resources: [databasebackups/finalizers]
  verbs: [update]
- apiGroups: [databases.test.io]
  resources: [databaserestores]
  verbs: [get, list, watch]
- apiGroups: [databases.test.io]
  resources: [databaserestores/status]
  verbs: [get, patch]
- apiGroups: [databases.test.io]
  resources: [databaserestores/finalizers]
  verbs: [update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, delete, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, update, delete]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
