//! An image's layers as a horizontal bar chart (inline SVG): one bar per
//! layer, its length proportional to the blob's size, labelled with the
//! size and what it holds; layers other images share are drawn in another
//! colour and say so. Scales to the page's width through its viewBox.

use std::fmt::Write;

use super::html::{bytes, escape, store_name};
use crate::service::LayerView;

/// Pixels per layer: a line of label, then the bar.
const ROW: f64 = 36.0;
const LABEL: f64 = 14.0;
const BAR: f64 = 12.0;
/// A tiny layer still shows as a sliver (a share of the width, in percent).
const MIN_BAR_PERCENT: f64 = 0.4;

/// The chart; `shared[i]` names the other images that use layer `i`. The
/// SVG has no viewBox: bar lengths are shares of the page's width and the
/// text keeps its size, so labels stay readable on a phone.
pub fn layer_chart(layers: &[LayerView], shared: &[Vec<String>]) -> String {
    let largest = layers.iter().map(|l| l.size).max().unwrap_or(0).max(1) as f64;
    let height = ROW * layers.len() as f64;
    let mut svg = format!(
        "<svg class=\"layers\" width=\"100%\" height=\"{height}\" role=\"img\" \
         aria-label=\"{count} layers by size\" xmlns=\"http://www.w3.org/2000/svg\">",
        count = layers.len()
    );
    for (i, layer) in layers.iter().enumerate() {
        let others = shared.get(i).map_or(&[][..], Vec::as_slice);
        let y = ROW * i as f64;
        let percent = (layer.size as f64 / largest * 100.0).max(MIN_BAR_PERCENT);
        let class = if others.is_empty() { "bar" } else { "bar shared" };
        let mut tooltip = format!("layer {}: {} ({})", i + 1, bytes(layer.size), layer.digest);
        if let Some((kind, paths)) = &layer.contents {
            let _ = write!(tooltip, "\n{kind}:\n{}", paths.join("\n"));
        }
        if !others.is_empty() {
            let _ = write!(tooltip, "\nshared with {}", others.join(", "));
        }
        let mut label = format!("{}. {} · {}", i + 1, bytes(layer.size), what(layer));
        if !others.is_empty() {
            label.push_str(" · shared");
        }
        let _ = write!(
            svg,
            "<g data-layer=\"{index}\"{shared_attr}><title>{tooltip}</title>\
             <text x=\"0\" y=\"{text_y}\">{label}</text>\
             <rect class=\"{class}\" x=\"0\" y=\"{bar_y}\" width=\"{percent:.2}%\" height=\"{BAR}\" rx=\"2\"/></g>",
            index = i + 1,
            shared_attr = if others.is_empty() { "" } else { " data-shared=\"true\"" },
            tooltip = escape(&tooltip),
            text_y = y + LABEL - 2.0,
            bar_y = y + LABEL + 2.0,
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
        assert!(svg.contains("width=\"100.00%\""), "{svg}");
        assert!(svg.contains(&format!("width=\"{MIN_BAR_PERCENT:.2}%\"")), "the small layer is a sliver: {svg}");
        assert!(svg.contains("1. 97.7 KiB · busybox · shared</text>") && svg.contains("data-shared=\"true\""));
        assert!(svg.contains("2. 10 B · a&lt;b&gt; +1</text>"), "labels are escaped: {svg}");
        assert_eq!(svg.matches("<rect class=\"bar shared\"").count(), 1);
    }
}
