//! Content negotiation on `Accept`: an OCI manifest by default, Docker
//! schema 2 for clients that ask only for Docker types.

use crate::http::Request;
use crate::media_type::{ManifestFormat, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};

/// The media types the client accepts with a quality above zero, over all `Accept` headers.
fn accepted(request: &Request) -> Vec<String> {
    request
        .headers_named("Accept")
        .flat_map(|value| value.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let media_type = parts.next()?.trim().to_ascii_lowercase();
            let rejected = parts.any(|param| {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                key.trim() == "q" && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            });
            (!media_type.is_empty() && !rejected).then_some(media_type)
        })
        .collect()
}

pub fn manifest_format(request: &Request) -> ManifestFormat {
    let types = accepted(request);
    let asks_docker = types.iter().any(|t| t == DOCKER_MANIFEST || t == DOCKER_MANIFEST_LIST);
    let asks_oci = types.iter().any(|t| t == OCI_MANIFEST || t == OCI_INDEX || t == "*/*" || t == "application/*");
    if asks_docker && !asks_oci {
        ManifestFormat::Docker
    } else {
        ManifestFormat::Oci
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(accept: &[&str]) -> Request {
        Request {
            method: "GET".into(),
            path: "/".into(),
            query: None,
            headers: accept.iter().map(|a| ("Accept".to_string(), a.to_string())).collect(),
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    #[test]
    fn negotiates() {
        assert_eq!(manifest_format(&request(&[])), ManifestFormat::Oci);
        assert_eq!(manifest_format(&request(&["*/*"])), ManifestFormat::Oci);
        assert_eq!(manifest_format(&request(&[DOCKER_MANIFEST])), ManifestFormat::Docker);
        assert_eq!(manifest_format(&request(&[DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])), ManifestFormat::Docker);
        let docker_cli = format!("{DOCKER_MANIFEST}, {DOCKER_MANIFEST_LIST}, {OCI_MANIFEST}, {OCI_INDEX}");
        assert_eq!(manifest_format(&request(&[&docker_cli])), ManifestFormat::Oci);
        assert_eq!(manifest_format(&request(&[DOCKER_MANIFEST, OCI_MANIFEST])), ManifestFormat::Oci);
        let refused_oci = format!("{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0");
        assert_eq!(manifest_format(&request(&[&refused_oci])), ManifestFormat::Docker);
        assert_eq!(
            manifest_format(&request(&["application/vnd.docker.distribution.manifest.v2+json; q=0.5"])),
            ManifestFormat::Docker
        );
    }
}
