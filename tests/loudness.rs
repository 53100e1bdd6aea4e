//! One steady loudness on air: a quiet and a loud recording of the same announcement
//! air within 1 LU of each other, measured on what a real receiver got.

mod common;

use std::time::Duration;

use common::*;
use loaxa::codec::Codec;

/// Receives one broadcast to the end and returns the decoded audio at 8 kHz.
fn decoded_stream(rx: &Receiver, codec: Codec) -> Vec<f32> {
    let (rtp, _) = receive_stream(rx, Duration::from_secs(25));
    rtp.iter()
        .flat_map(|d| codec.decode_payload(parse_rtp(&d.bytes).1))
        .map(|s| f32::from(s) / 32768.0)
        .collect()
}

#[tokio::test]
async fn a_quiet_and_a_loud_upload_air_within_one_lu_of_each_other_near_the_target() {
    let app = spawn_app().await;
    app.create_area("xa-a", None).await;
    let (rx_quiet, rx_loud) = (Receiver::bind(), Receiver::bind());
    let c_quiet = app.create_cluster("xa-a", "pcmu", rx_quiet.addr()).await;
    let c_loud = app.create_cluster("xa-a", "pcmu", rx_loud.addr()).await;
    let quiet = app.upload_ok(&fixture("announce-vi-quiet.flac")).await;
    let loud = app.upload_ok(&fixture("announce-vi-loud.flac")).await;
    // As uploaded they are 20 LU apart (the fixtures README: -34.7 and -14.9 LUFS).
    let uploaded_gap =
        loud["loudness_lufs"].as_f64().unwrap() - quiet["loudness_lufs"].as_f64().unwrap();
    assert!(uploaded_gap > 15.0, "uploaded gap {uploaded_gap}");

    let q = std::thread::spawn(move || decoded_stream(&rx_quiet, Codec::Pcmu));
    let l = std::thread::spawn(move || decoded_stream(&rx_loud, Codec::Pcmu));
    app.broadcast(quiet["id"].as_str().unwrap(), &[&c_quiet])
        .await;
    app.broadcast(loud["id"].as_str().unwrap(), &[&c_loud])
        .await;
    let (q, l) = tokio::task::spawn_blocking(move || (q.join().unwrap(), l.join().unwrap()))
        .await
        .unwrap();

    let lq = loaxa::media::measure(&q, 8000).expect("quiet aired silence");
    let ll = loaxa::media::measure(&l, 8000).expect("loud aired silence");
    let gap = (lq.integrated_lufs - ll.integrated_lufs).abs();
    println!(
        "aired: quiet {:.2} LUFS / {:.2} dBTP, loud {:.2} LUFS / {:.2} dBTP",
        lq.integrated_lufs, lq.true_peak_dbtp, ll.integrated_lufs, ll.true_peak_dbtp
    );
    assert!(
        gap <= 1.0,
        "aired {:.2} and {:.2} LUFS: {gap:.2} LU apart",
        lq.integrated_lufs,
        ll.integrated_lufs
    );
    // Near the -16 LUFS target (G.711 and the 8 kHz band cost a little loudness), and
    // under the -1 dBTP ceiling with G.711's quantisation as margin.
    for (name, m) in [("quiet", lq), ("loud", ll)] {
        assert!(
            (m.integrated_lufs + 16.0).abs() < 2.0,
            "{name} aired at {:.2} LUFS",
            m.integrated_lufs
        );
        assert!(
            m.true_peak_dbtp < -0.5,
            "{name} peaks at {:.2} dBTP",
            m.true_peak_dbtp
        );
    }
}
