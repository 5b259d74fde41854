{{- define "layerfill.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "layerfill.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "layerfill.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "layerfill.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "layerfill.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "layerfill.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "fetcher"). */}}
{{- define "layerfill.selectorLabels" -}}
app.kubernetes.io/name: {{ include "layerfill.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "layerfill.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "layerfill.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "layerfill.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "layerfill.secretName" -}}
{{- default (printf "%s-secrets" (include "layerfill.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "layerfill.routesSecretName" -}}
{{- default (printf "%s-routes" (include "layerfill.fullname" .)) .Values.routesExistingSecret }}
{{- end }}

{{/* The YAML file LAYERFILL_CONFIG names: the user's `config` with the ports this chart wires up. */}}
{{- define "layerfill.configYaml" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $_ := set $cfg "bridge" (merge (dict "host" "0.0.0.0" "port" (int .Values.bridge.port)) (default (dict) (get $cfg "bridge"))) }}
{{- $_ := set $cfg "fetcher" (merge (dict "health_port" (int .Values.fetcher.healthPort)) (default (dict) (get $cfg "fetcher"))) }}
{{- $_ := set $cfg "scanner" (merge (dict "health_port" (int .Values.scanner.healthPort)) (default (dict) (get $cfg "scanner"))) }}
{{- toYaml $cfg }}
{{- end }}

{{/* Data of the chart-owned credentials Secret: only the keys that have a value. */}}
{{- define "layerfill.secretData" -}}
{{- with .Values.secrets }}
database-url: {{ .databaseUrl | b64enc | quote }}
{{- with .s3AccessKey }}
s3-access-key: {{ . | b64enc | quote }}
{{- end }}
{{- with .s3SecretKey }}
s3-secret-key: {{ . | b64enc | quote }}
{{- end }}
{{- with .kafkaSaslPassword }}
kafka-sasl-password: {{ . | b64enc | quote }}
{{- end }}
{{- with .schemaRegistryBasicAuthUserInfo }}
schema-registry-basic-auth: {{ . | b64enc | quote }}
{{- end }}
{{- with .bridgeToken }}
bridge-token: {{ . | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment of every layerfill container: the config file and each credential from its Secret.
Call with (dict "ctx" $ "secret" NAME "routes" true): `routes` false leaves the upstream routes out.
*/}}
{{- define "layerfill.env" -}}
- name: LAYERFILL_CONFIG
  value: /etc/layerfill/config.yaml
- name: LAYERFILL_ENV_FILE
  value: none
- name: HOME
  value: /tmp
{{- $secret := .secret }}
- name: LAYERFILL_STATE__DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: database-url}}
{{- range $env, $key := dict "LAYERFILL_S3__ACCESS_KEY" "s3-access-key" "LAYERFILL_S3__SECRET_KEY" "s3-secret-key" "LAYERFILL_KAFKA__SASL_PASSWORD" "kafka-sasl-password" "LAYERFILL_SCHEMA_REGISTRY__BASIC_AUTH_USER_INFO" "schema-registry-basic-auth" "LAYERFILL_BRIDGE__TOKEN" "bridge-token" }}
- name: {{ $env }}
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ $key }}, optional: true}}
{{- end }}
{{- if .routes }}
- name: LAYERFILL_ROUTES
  valueFrom: {secretKeyRef: {name: {{ include "layerfill.routesSecretName" .ctx }}, key: routes.json}}
{{- end }}
{{- if .ctx.Values.kafkaCaSecret }}
- name: LAYERFILL_KAFKA__SSL_CA_LOCATION
  value: /etc/layerfill/kafka-tls/ca.crt
{{- end }}
{{- end }}

{{- define "layerfill.volumeMounts" -}}
- {name: config, mountPath: /etc/layerfill/config.yaml, subPath: config.yaml, readOnly: true}
- {name: tmp, mountPath: /tmp}
{{- if .Values.kafkaCaSecret }}
- {name: kafka-tls, mountPath: /etc/layerfill/kafka-tls, readOnly: true}
{{- end }}
{{- end }}

{{/* Volumes; call with (dict "ctx" $ "configMap" NAME). */}}
{{- define "layerfill.volumes" -}}
- name: config
  configMap: {name: {{ .configMap }}}
- name: tmp
  emptyDir: {sizeLimit: 256Mi}
{{- if .ctx.Values.kafkaCaSecret }}
- name: kafka-tls
  secret: {secretName: {{ .ctx.Values.kafkaCaSecret }}, items: [{key: ca.crt, path: ca.crt}]}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every workload. */}}
{{- define "layerfill.podCommon" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Liveness and readiness probes on a health port; call with (dict "ctx" $ "port" NAME). */}}
{{- define "layerfill.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  {{- toYaml .ctx.Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}}
  {{- toYaml .ctx.Values.probes.readiness | nindent 2 }}
{{- end }}
