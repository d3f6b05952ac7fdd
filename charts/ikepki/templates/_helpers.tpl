{{/* Names */}}
{{- define "ikepki.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ikepki.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ikepki.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: call with (dict "ctx" $ "component" "api") */}}
{{- define "ikepki.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ikepki.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- define "ikepki.labels" -}}
helm.sh/chart: {{ include "ikepki.chart" .ctx }}
{{ include "ikepki.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: ikepki
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "ikepki.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ikepki.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ikepki.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Object names */}}
{{- define "ikepki.configName" -}}{{ include "ikepki.fullname" . }}-config{{- end -}}
{{- define "ikepki.stateClaim" -}}{{ include "ikepki.fullname" . }}-state{{- end -}}
{{- define "ikepki.softhsmClaim" -}}{{ include "ikepki.fullname" . }}-softhsm{{- end -}}
{{- define "ikepki.postgresqlName" -}}{{ include "ikepki.fullname" . }}-postgresql{{- end -}}

{{- define "ikepki.hsmPinSecret" -}}
{{- default (printf "%s-hsm-pin" (include "ikepki.fullname" .)) .Values.hsm.pin.existingSecret -}}
{{- end -}}

{{- define "ikepki.adminSecret" -}}
{{- default (printf "%s-admin" (include "ikepki.fullname" .)) .Values.admin.existingSecret -}}
{{- end -}}

{{- define "ikepki.postgresqlSecret" -}}
{{- default (printf "%s-postgresql" (include "ikepki.fullname" .)) .Values.database.postgresql.existingSecret -}}
{{- end -}}

{{- define "ikepki.migrateStrategy" -}}
{{- if ne .Values.migrate.strategy "auto" -}}
{{- .Values.migrate.strategy -}}
{{- else if eq .Values.database.type "external" -}}
job
{{- else -}}
initContainer
{{- end -}}
{{- end -}}

{{/* Paths (the contract with the Python side) */}}
{{- define "ikepki.stateDir" -}}/var/lib/ikepki{{- end -}}
{{- define "ikepki.configFile" -}}/etc/ikepki/ikepki.yaml{{- end -}}
{{- define "ikepki.hsmPinFile" -}}/run/secrets/ikepki/hsm/pin{{- end -}}
{{- define "ikepki.hsmSoPinFile" -}}/run/secrets/ikepki/hsm-so/so-pin{{- end -}}
{{- define "ikepki.adminTokenFile" -}}/run/secrets/ikepki/admin/token{{- end -}}
{{- /* DIR/tokens: where "ikepki init" creates a SoftHSM token (ca/ceremony.py). */ -}}
{{- define "ikepki.softhsmTokenDir" -}}/var/lib/ikepki/tokens{{- end -}}

{{/* Pod-level security context: non-root uid 10001, RuntimeDefault seccomp. */}}
{{- define "ikepki.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context. */}}
{{- define "ikepki.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Environment of every ikepki process that talks to the CA core (api, ocsp, worker,
migrate, init).  Call with (dict "ctx" $ "component" "api").
*/}}
{{- define "ikepki.env" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
- name: IKEPKI_DIR
  value: {{ include "ikepki.stateDir" $ctx | quote }}
{{- if eq $v.database.type "external" }}
- name: IKEPKI_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.database.existingSecret.name }}
      key: {{ $v.database.existingSecret.key }}
{{- else if eq $v.database.type "postgresql" }}
{{- $pg := $v.database.postgresql }}
- name: DEMO_POSTGRESQL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "ikepki.postgresqlSecret" $ctx }}
      key: password
- name: IKEPKI_DATABASE_URL
  value: {{ printf "postgresql+psycopg://%s:$(DEMO_POSTGRESQL_PASSWORD)@%s:5432/%s" $pg.username (include "ikepki.postgresqlName" $ctx) $pg.database | quote }}
{{- end }}
{{- if ne .component "migrate" }}
- name: IKEPKI_HSM_MODULE
  value: {{ $v.hsm.modulePath | quote }}
- name: IKEPKI_HSM_TOKEN_LABEL
  value: {{ $v.hsm.tokenLabel | quote }}
- name: IKEPKI_HSM_PIN_FILE
  value: {{ include "ikepki.hsmPinFile" $ctx | quote }}
{{- if eq $v.hsm.type "softhsm" }}
- name: SOFTHSM2_CONF
  value: /etc/ikepki/softhsm2.conf
{{- end }}
{{- with $v.hsm.vendor.env }}
{{ toYaml . }}
{{- end }}
- name: IKEPKI_PUBLIC_BASE_URL
  value: {{ $v.config.publicBaseUrl | quote }}
- name: IKEPKI_OCSP_BASE_URL
  value: {{ $v.config.ocspBaseUrl | quote }}
{{- end }}
{{- if eq .component "api" }}
{{- if and $v.ingress.enabled $v.ingress.enroll.clientCert.enabled }}
- name: IKEPKI_EST_TRUSTED_PROXY_HEADER
  value: {{ $v.ingress.enroll.clientCert.header | quote }}
{{- end }}
{{- end }}
{{- if or (eq .component "api") (eq .component "init") }}
{{- /* init-ca registers this token (ikepki init), so the api accepts the Secret's token */}}
- name: IKEPKI_ADMIN_TOKEN_FILE
  value: {{ include "ikepki.adminTokenFile" $ctx | quote }}
{{- end }}
{{- if eq .component "init" }}
- name: IKEPKI_HSM_SO_PIN_FILE
  value: {{ include "ikepki.hsmSoPinFile" $ctx | quote }}
{{- end }}
{{- if $v.config.file }}
# --config through its environment variable (ca/cli/common.py), so the args stay as contracted.
- name: IKEPKI_CONFIG
  value: {{ include "ikepki.configFile" $ctx | quote }}
{{- end }}
- name: TMPDIR
  value: /tmp
{{- with $v.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volume mounts of the CA-core processes.  (dict "ctx" $ "component" "api") */}}
{{- define "ikepki.volumeMounts" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
- name: tmp
  mountPath: /tmp
- name: state
  mountPath: {{ include "ikepki.stateDir" $ctx }}
{{- if and $v.ca.deploymentSecret.name (ne .component "init") }}
{{- range $v.ca.deploymentSecret.items }}
- name: ca-deployment
  mountPath: {{ printf "%s/%s" (include "ikepki.stateDir" $ctx) .path }}
  subPath: {{ .path }}
  readOnly: true
{{- end }}
{{- end }}
- name: config
  mountPath: /etc/ikepki
  readOnly: true
{{- if ne .component "migrate" }}
- name: hsm-pin
  mountPath: /run/secrets/ikepki/hsm
  readOnly: true
{{- if eq .component "init" }}
- name: hsm-so-pin
  mountPath: /run/secrets/ikepki/hsm-so
  readOnly: true
{{- end }}
{{- if eq $v.hsm.type "softhsm" }}
- name: softhsm-tokens
  mountPath: {{ include "ikepki.softhsmTokenDir" $ctx }}
{{- else }}
{{- if or $v.hsm.vendor.copyFromImage.enabled $v.hsm.vendor.volume }}
- name: pkcs11-module
  mountPath: {{ $v.hsm.vendor.mountPath }}
  readOnly: true
{{- end }}
{{- if or $v.hsm.vendor.configMap $v.hsm.vendor.secret }}
- name: pkcs11-config
  mountPath: {{ $v.hsm.vendor.configMountPath }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}
{{- if or (eq .component "api") (eq .component "init") }}
- name: admin-token
  mountPath: /run/secrets/ikepki/admin
  readOnly: true
{{- end }}
{{- if and (ne .component "migrate") (ne .component "init") }}
{{- range $v.extraSecretMounts }}
- name: extra-{{ .name }}
  mountPath: /run/secrets/ikepki/{{ .name }}
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes of the CA-core pods.  (dict "ctx" $ "component" "api") */}}
{{- define "ikepki.volumes" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
- name: state
{{- if and $v.persistence.enabled (ne .component "migrate") }}
  persistentVolumeClaim:
    claimName: {{ include "ikepki.stateClaim" $ctx }}
{{- else }}
  emptyDir:
    sizeLimit: 1Gi
{{- end }}
{{- with $v.ca.deploymentSecret.name }}
- name: ca-deployment
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      {{- toYaml $v.ca.deploymentSecret.items | nindent 6 }}
{{- end }}
- name: config
  projected:
    sources:
      - configMap:
          name: {{ include "ikepki.configName" $ctx }}
          optional: {{ eq .component "migrate" }}
{{- if ne .component "migrate" }}
- name: hsm-pin
  secret:
    secretName: {{ include "ikepki.hsmPinSecret" $ctx }}
    defaultMode: 0400
    items:
      - key: pin
        path: pin
{{- if and (eq .component "api") $v.ca.init.enabled }}
- name: hsm-so-pin
  secret:
    secretName: {{ include "ikepki.hsmPinSecret" $ctx }}
    defaultMode: 0400
    items:
      - key: so-pin
        path: so-pin
{{- end }}
{{- if eq $v.hsm.type "softhsm" }}
- name: softhsm-tokens
  persistentVolumeClaim:
    claimName: {{ include "ikepki.softhsmClaim" $ctx }}
{{- else }}
{{- if $v.hsm.vendor.copyFromImage.enabled }}
- name: pkcs11-module
  emptyDir:
    sizeLimit: 512Mi
{{- else if $v.hsm.vendor.volume }}
- name: pkcs11-module
{{ toYaml $v.hsm.vendor.volume | indent 2 }}
{{- end }}
{{- if or $v.hsm.vendor.configMap $v.hsm.vendor.secret }}
- name: pkcs11-config
  projected:
    sources:
{{- with $v.hsm.vendor.configMap }}
      - configMap:
          name: {{ . }}
{{- end }}
{{- with $v.hsm.vendor.secret }}
      - secret:
          name: {{ . }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .component "api" }}
- name: admin-token
  secret:
    secretName: {{ include "ikepki.adminSecret" $ctx }}
    defaultMode: 0400
    items:
      - key: token
        path: token
{{- end }}
{{- if ne .component "migrate" }}
{{- range $v.extraSecretMounts }}
- name: extra-{{ .name }}
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end -}}

{{/* Init container copying a vendor PKCS#11 module into the pkcs11-module emptyDir. */}}
{{- define "ikepki.vendorModuleInit" -}}
{{- $v := .Values -}}
{{- if and (eq $v.hsm.type "pkcs11") $v.hsm.vendor.copyFromImage.enabled }}
- name: copy-pkcs11-module
  image: {{ $v.hsm.vendor.copyFromImage.image | quote }}
  imagePullPolicy: IfNotPresent
  command: ["cp", "-R", "{{ trimSuffix "/" $v.hsm.vendor.copyFromImage.sourcePath }}/.", "/pkcs11-module/"]
  securityContext:
    {{- include "ikepki.containerSecurityContext" . | nindent 4 }}
  resources:
    requests: {cpu: 10m, memory: 32Mi}
    limits: {memory: 64Mi}
  volumeMounts:
    - name: pkcs11-module
      mountPath: /pkcs11-module
{{- end }}
{{- end -}}

{{/* Scheduling block.  (dict "ctx" $ "component" "ocsp" "values" .Values.ocsp) */}}
{{- define "ikepki.scheduling" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else if and (include "ikepki.needsColocation" $ctx) (ne .component "api") (ne .component "gateway") $v.api.enabled }}
affinity:
  podAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "ikepki.selectorLabels" (dict "ctx" $ctx "component" "api") | nindent 12 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Non-empty when the CA-core pods share ReadWriteOnce volumes and must run on one node. */}}
{{- define "ikepki.needsColocation" -}}
{{- $v := .Values -}}
{{- $rwo := false -}}
{{- if and $v.persistence.enabled (has "ReadWriteOnce" $v.persistence.accessModes) -}}{{- $rwo = true -}}{{- end -}}
{{- if and (eq $v.hsm.type "softhsm") (has "ReadWriteOnce" $v.hsm.softhsm.persistence.accessModes) -}}{{- $rwo = true -}}{{- end -}}
{{- if and $rwo $v.persistence.colocate -}}true{{- end -}}
{{- end -}}

{{- define "ikepki.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Random value kept across upgrades: (dict "ctx" $ "secret" name "key" key "length" 32) */}}
{{- define "ikepki.persistentRandom" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if and $existing (index ($existing.data | default dict) .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum (int .length) -}}
{{- end -}}
{{- end -}}

{{/* Egress of the CA-core pods when networkPolicy.egress.enabled. */}}
{{- define "ikepki.egressRules" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if eq .Values.database.type "postgresql" }}
- to:
    - podSelector:
        matchLabels:
          {{- include "ikepki.selectorLabels" (dict "ctx" . "component" "postgresql") | nindent 10 }}
  ports:
    - port: 5432
      protocol: TCP
{{- end }}
{{- with .Values.networkPolicy.egress.extraRules }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ocsp/worker: wait until the api's init-ca container has written the deployment (demo). */}}
{{- define "ikepki.waitForCa" -}}
{{- if and .Values.ca.init.enabled .Values.api.enabled }}
- name: wait-for-ca
  image: {{ include "ikepki.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["/bin/sh", "-c"]
  args:
    - 'until test -e "$IKEPKI_DIR/deployment.yaml" && ! test -e "$IKEPKI_DIR/init-incomplete"; do echo "waiting for ikepki init in the api pod"; sleep 3; done'
  env:
    - name: IKEPKI_DIR
      value: {{ include "ikepki.stateDir" . | quote }}
  securityContext:
    {{- include "ikepki.containerSecurityContext" . | nindent 4 }}
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {memory: 32Mi}
  volumeMounts:
    - name: state
      mountPath: {{ include "ikepki.stateDir" . }}
      readOnly: true
{{- end }}
{{- end -}}
