//! An image's layers as a horizontal bar chart (inline SVG): one bar per
//! layer, its length proportional to the blob's size, labelled with the
//! size and what it holds; layers other images share are drawn in another
//! colour and say so. Scales to the page's width through its viewBox.

use std::fmt::Write;

use super::html::{bytes, escape, store_name};
use crate::service::LayerView;

const WIDTH: f64 = 640.0;
const ROW: f64 = 24.0;
const BAR: f64 = 16.0;
/// The bars take this share of the width; the labels the rest.
const BAR_SPACE: f64 = 0.55;
/// A tiny layer still shows as a sliver.
const MIN_BAR: f64 = 2.0;

/// The chart; `shared[i]` names the other images that use layer `i`.
pub fn layer_chart(layers: &[LayerView], shared: &[Vec<String>]) -> String {
    let largest = layers.iter().map(|l| l.size).max().unwrap_or(0).max(1) as f64;
    let height = ROW * layers.len() as f64 + 4.0;
    let mut svg = format!(
        "<svg class=\"layers\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" \
         aria-label=\"{count} layers by size\" xmlns=\"http://www.w3.org/2000/svg\">",
        count = layers.len()
    );
    for (i, layer) in layers.iter().enumerate() {
        let others = shared.get(i).map_or(&[][..], Vec::as_slice);
        let y = 2.0 + ROW * i as f64;
        let length = (layer.size as f64 / largest * WIDTH * BAR_SPACE).max(MIN_BAR);
        let class = if others.is_empty() { "bar" } else { "bar shared" };
        let mut tooltip = format!("layer {}: {} ({})", i + 1, bytes(layer.size), layer.digest);
        if let Some((kind, paths)) = &layer.contents {
            let _ = write!(tooltip, "\n{kind}:\n{}", paths.join("\n"));
        }
        if !others.is_empty() {
            let _ = write!(tooltip, "\nshared with {}", others.join(", "));
        }
        let mut label = format!("{} · {}", bytes(layer.size), what(layer));
        if !others.is_empty() {
            label.push_str(" · shared");
        }
        let _ = write!(
            svg,
            "<g data-layer=\"{index}\"{shared_attr}><title>{tooltip}</title>\
             <rect class=\"{class}\" x=\"0\" y=\"{y}\" width=\"{length:.1}\" height=\"{BAR}\" rx=\"2\"/>\
             <text x=\"{text_x:.1}\" y=\"{text_y:.1}\">{label}</text></g>",
            index = i + 1,
            shared_attr = if others.is_empty() { "" } else { " data-shared=\"true\"" },
            tooltip = escape(&tooltip),
            text_x = length + 6.0,
            text_y = y + BAR - 4.0,
            label = escape(&label),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A short name for what a layer holds: its first store path's name, and how many more.
pub fn what(layer: &LayerView) -> String {
    match &layer.contents {
        Some((kind, paths)) => match paths.as_slice() {
            [] => kind.to_string(),
            [only] if kind.starts_with("store") || kind.starts_with("nix2container") => store_name(only).to_string(),
            [first, rest @ ..] if kind.starts_with("store") || kind.starts_with("nix2container") => {
                format!("{} +{}", store_name(first), rest.len())
            }
            [first, ..] if kind.starts_with("flakeforge") => format!("root file system for {}", store_name(first)),
            [first, ..] => format!("{kind}: {}", store_name(first)),
        },
        None => "unknown contents".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn layer(size: u64, paths: &[&str]) -> LayerView {
        LayerView {
            digest: Digest::of(&size.to_le_bytes()),
            size,
            cached: true,
            contents: Some(("store paths", paths.iter().map(|p| p.to_string()).collect())),
        }
    }

    #[test]
    fn bars_scale_with_size_and_shared_layers_are_marked() {
        let hash = "0123456789abcdfghijklmnpqrsvwxyz";
        let layers = [
            layer(100_000, &[&format!("/nix/store/{hash}-busybox")]),
            layer(10, &[&format!("/nix/store/{hash}-a<b>"), "/nix/store/x-y"]),
        ];
        let svg = layer_chart(&layers, &[vec!["other".into()], vec![]]);
        assert!(svg.contains(&format!("width=\"{:.1}\"", WIDTH * BAR_SPACE)), "{svg}");
        assert!(svg.contains(&format!("width=\"{MIN_BAR:.1}\"")), "the small layer is a sliver: {svg}");
        assert!(svg.contains("97.7 KiB · busybox · shared</text>") && svg.contains("data-shared=\"true\""));
        assert!(svg.contains("10 B · a&lt;b&gt; +1</text>"), "labels are escaped: {svg}");
        assert_eq!(svg.matches("<rect class=\"bar shared\"").count(), 1);
    }
}
