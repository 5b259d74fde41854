{{/*
One layerfill process as a Deployment. Call with
(dict "ctx" $ "component" "fetcher" "values" .Values.fetcher "port" 18090 "portName" "health" "extraEnv" LIST).
*/}}
{{- define "layerfill.deployment" -}}
{{- $ctx := .ctx }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "layerfill.fullname" $ctx }}-{{ .component }}
  labels:
    {{- include "layerfill.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  replicas: {{ .values.replicas }}
  selector:
    matchLabels:
      {{- include "layerfill.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "layerfill.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 8 }}
        {{- with $ctx.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # Roll the pods when the rendered configuration changes.
        checksum/config: {{ include "layerfill.configYaml" $ctx | sha256sum }}
        {{- with $ctx.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "layerfill.serviceAccountName" $ctx }}
      {{- include "layerfill.podCommon" $ctx | nindent 6 }}
      terminationGracePeriodSeconds: {{ .values.terminationGracePeriodSeconds }}
      containers:
        - name: {{ .component }}
          image: {{ include "layerfill.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          args: [run, {{ .component }}]
          env:
            {{- include "layerfill.env" (dict "ctx" $ctx "secret" (include "layerfill.secretName" $ctx) "routes" true) | nindent 12 }}
            {{- with .extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - {name: {{ .portName }}, containerPort: {{ .port }}, protocol: TCP}
          {{- include "layerfill.probes" (dict "ctx" $ctx "port" .portName) | nindent 10 }}
          resources:
            {{- toYaml .values.resources | nindent 12 }}
          securityContext:
            {{- toYaml $ctx.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "layerfill.volumeMounts" $ctx | nindent 12 }}
      volumes:
        {{- include "layerfill.volumes" (dict "ctx" $ctx "configMap" (include "layerfill.fullname" $ctx)) | nindent 8 }}
{{- end }}

{{/* A ClusterIP Service in front of one component's port. */}}
{{- define "layerfill.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "layerfill.fullname" .ctx }}-{{ .component }}
  labels:
    {{- include "layerfill.labels" .ctx | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  type: {{ .type | default "ClusterIP" }}
  selector:
    {{- include "layerfill.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  ports:
    - {name: {{ .portName }}, port: {{ .servicePort }}, targetPort: {{ .portName }}, protocol: TCP}
{{- end }}

{{/* A PodDisruptionBudget for one component. */}}
{{- define "layerfill.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "layerfill.fullname" .ctx }}-{{ .component }}
  labels:
    {{- include "layerfill.labels" .ctx | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "layerfill.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end }}
