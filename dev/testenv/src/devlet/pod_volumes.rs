//! A Pod's volumes as local directories, filled as a kubelet fills them: configMap, secret and
//! downwardAPI files (items, file modes), claims as their PersistentVolume's directory, and
//! projected volumes — the `kube-api-access-*` volume the ServiceAccount admission plugin adds
//! to every Pod: a ServiceAccount token from the TokenRequest API bound to the Pod (refreshed
//! before it expires, as the kubelet does at 80 % of its lifetime or after 24 h), the cluster CA
//! from ConfigMap `kube-root-ca.crt`, and the namespace. Anything else is an empty directory.
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod,
    Secret, ServiceAccount, ServiceAccountTokenProjection, Volume,
};
use kube::ResourceExt;
use kube::api::{Api, PostParams};

/// The mode of volume files when the Pod names none (0644).
const DEFAULT_MODE: i32 = 0o644;

/// A task that ends when this is dropped (a token refresher of a Pod that stopped).
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A Pod's volumes: name → local directory, and the tasks that keep them fresh.
pub struct PodVolumes {
    pub dirs: BTreeMap<String, PathBuf>,
    pub refreshers: Vec<AbortOnDrop>,
}

/// Makes every volume of `pod` under `dir/volumes/`.
pub async fn prepare(client: &kube::Client, pod: &Pod, dir: &Path) -> anyhow::Result<PodVolumes> {
    let ns = pod.namespace().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = PodVolumes {
        dirs: BTreeMap::new(),
        refreshers: Vec::new(),
    };
    for v in spec.volumes.clone().unwrap_or_default() {
        let vdir = dir.join("volumes").join(&v.name);
        if let Some(claim) = &v.persistent_volume_claim {
            out.dirs.insert(
                v.name.clone(),
                claim_dir(client, &ns, &claim.claim_name).await?,
            );
            continue;
        }
        std::fs::create_dir_all(&vdir)?;
        fill(client, pod, &v, &vdir, &mut out.refreshers).await?;
        out.dirs.insert(v.name.clone(), vdir);
    }
    Ok(out)
}

async fn fill(
    client: &kube::Client,
    pod: &Pod,
    v: &Volume,
    vdir: &Path,
    refreshers: &mut Vec<AbortOnDrop>,
) -> anyhow::Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(cm) = &v.config_map {
        let mode = cm.default_mode.unwrap_or(DEFAULT_MODE);
        config_map_files(
            client,
            &ns,
            &cm.name,
            cm.items.as_deref(),
            cm.optional,
            mode,
            vdir,
        )
        .await?;
    } else if let Some(secret) = &v.secret {
        // As the kubelet: the files appear at once (a `..data` link swapped to a new
        // directory) and follow the Secret's changes while the Pod runs.
        let volume = SecretVolume {
            ns: ns.clone(),
            name: secret.secret_name.clone().unwrap_or_default(),
            items: secret.items.clone(),
            optional: secret.optional,
            mode: secret.default_mode.unwrap_or(DEFAULT_MODE),
            vdir: vdir.to_path_buf(),
        };
        let version = volume.write(client, None).await?;
        refreshers.push(volume.refresher(client.clone(), version));
    } else if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(DEFAULT_MODE);
        downward_files(pod, d.items.as_deref().unwrap_or_default(), mode, vdir)?;
    } else if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(DEFAULT_MODE);
        for source in p.sources.clone().unwrap_or_default() {
            if let Some(cm) = &source.config_map {
                config_map_files(
                    client,
                    &ns,
                    &cm.name,
                    cm.items.as_deref(),
                    cm.optional,
                    mode,
                    vdir,
                )
                .await?;
            } else if let Some(s) = &source.secret {
                secret_files(
                    client,
                    &ns,
                    &s.name,
                    s.items.as_deref(),
                    s.optional,
                    mode,
                    vdir,
                )
                .await?;
            } else if let Some(d) = &source.downward_api {
                downward_files(pod, d.items.as_deref().unwrap_or_default(), mode, vdir)?;
            } else if let Some(t) = &source.service_account_token {
                let path = vdir.join(&t.path);
                let lifetime = write_token(client, pod, t, &path, mode).await?;
                refreshers.push(refresher(
                    client.clone(),
                    pod.clone(),
                    t.clone(),
                    path,
                    mode,
                    lifetime,
                ));
            }
        }
    }
    // emptyDir and anything else: the (empty) directory.
    Ok(())
}

/// A claim's local directory (the hostPath of its bound PersistentVolume).
async fn claim_dir(client: &kube::Client, ns: &str, claim: &str) -> anyhow::Result<PathBuf> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let c = claims.get(claim).await?;
    let pv_name = c
        .spec
        .and_then(|s| s.volume_name)
        .context("claim not bound")?;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await?;
    let path = pv
        .spec
        .and_then(|s| s.host_path)
        .context("volume is not a local directory")?
        .path;
    Ok(PathBuf::from(path))
}

#[allow(clippy::too_many_arguments)]
async fn config_map_files(
    client: &kube::Client,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: i32,
    vdir: &Path,
) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let Some(cm) = api
        .get_opt(name)
        .await
        .with_context(|| format!("ConfigMap {name}"))?
    else {
        if optional == Some(true) {
            return Ok(());
        }
        bail!("ConfigMap {name} not found");
    };
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    data.extend(
        cm.binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0)),
    );
    key_files(
        &format!("ConfigMap {name}"),
        data,
        items,
        optional,
        mode,
        vdir,
    )
}

#[allow(clippy::too_many_arguments)]
async fn secret_files(
    client: &kube::Client,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: i32,
    vdir: &Path,
) -> anyhow::Result<()> {
    let Some((_, data)) = fetch_secret(client, ns, name, optional).await? else {
        return Ok(());
    };
    key_files(&format!("Secret {name}"), data, items, optional, mode, vdir)
}

/// A Secret's resourceVersion and data; `None` when it does not exist and is optional.
async fn fetch_secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: Option<bool>,
) -> anyhow::Result<Option<(String, BTreeMap<String, Vec<u8>>)>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let Some(s) = api
        .get_opt(name)
        .await
        .with_context(|| format!("Secret {name}"))?
    else {
        if optional == Some(true) {
            return Ok(None);
        }
        bail!("Secret {name} not found");
    };
    let version = s.resource_version().unwrap_or_default();
    let data = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    Ok(Some((version, data)))
}

/// A Secret volume of a running Pod: which Secret, which keys, where.
struct SecretVolume {
    ns: String,
    name: String,
    items: Option<Vec<KeyToPath>>,
    optional: Option<bool>,
    mode: i32,
    vdir: PathBuf,
}

impl SecretVolume {
    /// Writes the volume the way the kubelet's atomic writer does: the files in a new
    /// directory `..<version>`, the link `..data` swapped to it in one rename, each top-level
    /// name a link through `..data`. A reader sees the old or the new content, never a mix,
    /// and a replaced file has a new modification time. Returns the Secret's resourceVersion
    /// written (`None` when it does not exist and is optional); nothing is written when
    /// `known` is it.
    async fn write(
        &self,
        client: &kube::Client,
        known: Option<&str>,
    ) -> anyhow::Result<Option<String>> {
        let (name, vdir) = (&self.name, &self.vdir);
        let Some((version, data)) = fetch_secret(client, &self.ns, name, self.optional).await?
        else {
            return Ok(None);
        };
        if known == Some(version.as_str()) {
            return Ok(Some(version));
        }
        let stamp = format!(
            "..{}_{}",
            version,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let fresh = vdir.join(&stamp);
        std::fs::create_dir_all(&fresh)?;
        key_files(
            &format!("Secret {name}"),
            data,
            self.items.as_deref(),
            self.optional,
            self.mode,
            &fresh,
        )?;
        let data_link = vdir.join("..data");
        let previous = std::fs::read_link(&data_link).ok();
        let tmp_link = vdir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp_link);
        std::os::unix::fs::symlink(&stamp, &tmp_link)?;
        std::fs::rename(&tmp_link, &data_link)?;
        let mut names = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&fresh)? {
            let entry = entry?;
            let file = entry.file_name();
            names.insert(file.clone());
            let link = vdir.join(&file);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(&file), &link)?;
            }
        }
        // Names the new content lacks go, then the old directory.
        for entry in std::fs::read_dir(vdir)? {
            let entry = entry?;
            let file = entry.file_name();
            if !file.to_string_lossy().starts_with("..") && !names.contains(&file) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        if let Some(old) = previous.filter(|o| o.as_os_str() != stamp.as_str()) {
            let _ = std::fs::remove_dir_all(vdir.join(old));
        }
        Ok(Some(version))
    }

    /// Keeps the volume current while the Pod runs (the kubelet syncs within a minute or so;
    /// here every two seconds), from `version` on.
    fn refresher(self, client: kube::Client, mut version: Option<String>) -> AbortOnDrop {
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                match self.write(&client, version.as_deref()).await {
                    Ok(v) => {
                        if v != version {
                            tracing::debug!(secret = %self.name, "secret volume updated");
                        }
                        version = v;
                    }
                    Err(e) => {
                        tracing::debug!(secret = %self.name, error = format!("{e:#}"), "cannot refresh a secret volume")
                    }
                }
            }
        }))
    }
}

/// Every key as a file, or only `items` (key → path, with their own modes).
fn key_files(
    what: &str,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: i32,
    vdir: &Path,
) -> anyhow::Result<()> {
    match items {
        None => {
            for (k, bytes) in &data {
                write_file(&vdir.join(k), bytes, mode)?;
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(bytes) => {
                        write_file(&vdir.join(&item.path), bytes, item.mode.unwrap_or(mode))?
                    }
                    None if optional == Some(true) => {}
                    None => bail!("{what} has no key {}", item.key),
                }
            }
        }
    }
    Ok(())
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: i32,
    vdir: &Path,
) -> anyhow::Result<()> {
    for item in items {
        let field = item
            .field_ref
            .as_ref()
            .map(|f| f.field_path.as_str())
            .unwrap_or_default();
        let value = field_value(pod, field);
        write_file(
            &vdir.join(&item.path),
            value.as_bytes(),
            item.mode.unwrap_or(mode),
        )?;
    }
    Ok(())
}

/// A downward-API field of the Pod (`metadata.name`, …).
pub fn field_value(pod: &Pod, field: &str) -> String {
    match field {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(pod.labels()),
        "metadata.annotations" => format_map(pod.annotations()),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "status.podIP" => pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// `key="value"` lines, as the kubelet writes labels and annotations.
fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter().map(|(k, v)| format!("{k}={v:?}\n")).collect()
}

/// Writes a file whole (a reader never sees half of it) with its mode.
fn write_file(path: &Path, bytes: &[u8], mode: i32) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("devlet-tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode((mode & 0o777) as u32))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Requests a token of the Pod's ServiceAccount bound to the Pod and writes it; returns how
/// long it is valid.
async fn write_token(
    client: &kube::Client,
    pod: &Pod,
    t: &ServiceAccountTokenProjection,
    path: &Path,
    mode: i32,
) -> anyhow::Result<Duration> {
    let ns = pod.namespace().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: t.audience.clone().into_iter().collect(),
            expiration_seconds: Some(t.expiration_seconds.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let granted = api
        .create_token_request(&sa, &PostParams::default(), &request)
        .await
        .with_context(|| format!("a token of ServiceAccount {ns}/{sa}"))?;
    let status = granted.status.context("a TokenRequest without status")?;
    write_file(path, status.token.as_bytes(), mode)?;
    let expires = status.expiration_timestamp.0;
    let lifetime = expires.duration_since(k8s_openapi::jiff::Timestamp::now());
    Ok(Duration::try_from(lifetime).unwrap_or(Duration::ZERO))
}

/// When the kubelet renews a token valid for `lifetime`: at 80 % of it, at most after 24 h.
pub fn refresh_after(lifetime: Duration) -> Duration {
    (lifetime.mul_f64(0.8)).min(Duration::from_secs(24 * 3600))
}

/// Renews the token before it expires, as long as the Pod runs here.
fn refresher(
    client: kube::Client,
    pod: Pod,
    t: ServiceAccountTokenProjection,
    path: PathBuf,
    mode: i32,
    lifetime: Duration,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut wait = refresh_after(lifetime);
        loop {
            tokio::time::sleep(wait).await;
            wait = match write_token(&client, &pod, &t, &path, mode).await {
                Ok(lifetime) => {
                    tracing::debug!(pod = %pod.name_any(), "service account token renewed");
                    refresh_after(lifetime)
                }
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = format!("{e:#}"), "cannot renew the service account token");
                    Duration::from_secs(10)
                }
            };
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_at_80_percent_or_daily() {
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(365 * 24 * 3600)),
            Duration::from_secs(24 * 3600)
        );
    }
}
