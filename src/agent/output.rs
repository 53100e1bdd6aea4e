//! Where the agent's decoded audio goes: nowhere (counted), a WAV file or the sound card.
//! Owns the conversion to the sink's sample rate; knows nothing of RTP, codecs or volume.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::wav::WavWriter;

/// The agent's `--output`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// Decode and count, play nothing (load tests, CI).
    Null,
    /// Record to a WAV file at the rate of the first stream.
    Wav(PathBuf),
    /// The sound card: the default output device, or a named ALSA PCM (`hw:0,0`, `plughw:1`).
    Alsa { device: Option<String> },
}

impl FromStr for OutputSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "null" => Ok(Self::Null),
            None if s == "alsa" => Ok(Self::Alsa { device: None }),
            Some(("wav", path)) if !path.is_empty() => Ok(Self::Wav(path.into())),
            Some(("alsa", device)) if !device.is_empty() => Ok(Self::Alsa {
                device: Some(device.to_owned()),
            }),
            _ => Err(format!(
                "unknown output `{s}`: expected null, wav:PATH, alsa or alsa:DEVICE"
            )),
        }
    }
}

impl fmt::Display for OutputSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Wav(path) => write!(f, "wav:{}", path.display()),
            Self::Alsa { device: None } => f.write_str("alsa"),
            Self::Alsa {
                device: Some(device),
            } => write!(f, "alsa:{device}"),
        }
    }
}

/// Why audio could not reach its output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The WAV file could not be created or written (including its 4 GiB limit).
    #[error("WAV output {}: {source}", path.display())]
    Wav { path: PathBuf, source: io::Error },
    /// No usable sound card, or a build without ALSA support.
    #[error("no ALSA output device: {0} (build with --features alsa / check the sound card)")]
    NoDevice(String),
    /// The sound card stream died while playing (device unplugged, driver error).
    #[error("ALSA output failed: {0}")]
    Device(String),
}

/// A sink for decoded mono audio.
pub trait Output: Send {
    /// Plays or writes one frame of mono samples at `sample_rate`. The rate may change
    /// between streams; each output converts to its own rate.
    fn play(&mut self, samples: &[i16], sample_rate: u32) -> Result<(), OutputError>;
    /// Samples handed to the device or file so far, at its own rate.
    fn samples(&self) -> u64;
}

pub fn open(spec: &OutputSpec) -> Result<Box<dyn Output>, OutputError> {
    match spec {
        OutputSpec::Null => Ok(Box::new(NullOutput { samples: 0 })),
        OutputSpec::Wav(path) => {
            // The file itself waits for the first frame, which fixes its rate; a bad
            // directory should still fail at start-up, not when the first call comes in.
            let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty());
            if let Some(dir) = dir.filter(|dir| !dir.is_dir()) {
                let source = io::Error::new(io::ErrorKind::NotFound, "no such directory");
                return Err(wav_error(dir, source));
            }
            Ok(Box::new(WavOutput {
                path: path.clone(),
                file: None,
            }))
        }
        #[cfg(feature = "alsa")]
        OutputSpec::Alsa { device } => Ok(Box::new(alsa::AlsaOutput::open(device.as_deref())?)),
        #[cfg(not(feature = "alsa"))]
        OutputSpec::Alsa { .. } => Err(OutputError::NoDevice(
            "this build has no ALSA support".into(),
        )),
    }
}

struct NullOutput {
    samples: u64,
}

impl Output for NullOutput {
    fn play(&mut self, samples: &[i16], _sample_rate: u32) -> Result<(), OutputError> {
        self.samples += samples.len() as u64;
        Ok(())
    }

    fn samples(&self) -> u64 {
        self.samples
    }
}

struct WavOutput {
    path: PathBuf,
    /// Created on the first frame, so the file runs at the first stream's rate; later
    /// streams are resampled to it.
    file: Option<(WavWriter, Resampler)>,
}

impl Output for WavOutput {
    fn play(&mut self, samples: &[i16], sample_rate: u32) -> Result<(), OutputError> {
        let (writer, resampler) = match &mut self.file {
            Some(file) if file.0.samples_written() > 0 || file.0.sample_rate() == sample_rate => {
                file
            }
            slot => {
                let writer = WavWriter::create(&self.path, sample_rate);
                let writer = writer.map_err(|source| wav_error(&self.path, source))?;
                slot.insert((writer, Resampler::new(sample_rate)))
            }
        };
        let samples = resampler.convert(samples, sample_rate);
        writer
            .write(samples)
            .map_err(|source| wav_error(&self.path, source))
    }

    fn samples(&self) -> u64 {
        self.file
            .as_ref()
            .map_or(0, |(writer, _)| writer.samples_written())
    }
}

fn wav_error(path: &Path, source: io::Error) -> OutputError {
    OutputError::Wav {
        path: path.to_owned(),
        source,
    }
}

/// Linear interpolation from whatever rate frames arrive at to one fixed rate, carrying
/// its position across frames so frame edges neither click nor drift. Without a low-pass
/// filter, downsampling aliases; the agent's sinks run at or above the codec rates, so in
/// practice this only upsamples.
pub(crate) struct Resampler {
    to: u32,
    from: u32,
    /// Position of the next output sample in 1/`to` input samples, counted from `prev`.
    pos: u64,
    /// The last input sample of the previous frame.
    prev: i16,
    out: Vec<i16>,
}

impl Resampler {
    pub(crate) fn new(to: u32) -> Self {
        Self {
            to,
            from: to,
            pos: u64::from(to),
            prev: 0,
            out: Vec::new(),
        }
    }

    /// `samples` at `from` Hz, converted to the target rate. A change of `from` starts a
    /// new stream: nothing is interpolated across it.
    pub(crate) fn convert<'a>(&'a mut self, samples: &'a [i16], from: u32) -> &'a [i16] {
        if from != self.from {
            *self = Self {
                from,
                out: std::mem::take(&mut self.out),
                ..Self::new(self.to)
            };
        }
        // A rate of 0 is nonsense; passing it through beats dividing by it.
        if from == self.to || from == 0 || self.to == 0 {
            return samples;
        }
        let (to, n) = (u64::from(self.to), samples.len() as u64);
        // x(0) is the previous frame's last sample, x(k) is samples[k - 1].
        let x = |k: u64| {
            if k == 0 {
                self.prev
            } else {
                samples[k as usize - 1]
            }
        };
        self.out.clear();
        loop {
            let (i, frac) = (self.pos / to, self.pos % to);
            if i > n || (i == n && frac > 0) {
                break;
            }
            let a = i64::from(x(i));
            let sample = if frac == 0 {
                a
            } else {
                a + (i64::from(x(i + 1)) - a) * frac as i64 / to as i64
            };
            // Between two i16 samples, so it fits.
            self.out.push(sample as i16);
            self.pos += u64::from(from);
        }
        self.prev = x(n);
        self.pos -= n * to;
        &self.out
    }
}

#[cfg(feature = "alsa")]
mod alsa {
    //! The sound card through cpal: `play` fills a bounded queue that the audio callback
    //! drains on cpal's own thread.

    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex, PoisonError};

    use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
    use cpal::{FromSample, SampleFormat, SizedSample};

    use super::{Output, OutputError, Resampler};

    /// Most audio that may wait for the card, in ms: rides out a burst of late frames,
    /// yet bounds how far a speaker can fall behind its neighbours.
    const QUEUE_MS: u32 = 500;
    /// Audio queued before playback (re)starts, in ms: more than one 60 ms frame, so
    /// normal jitter in frame arrival does not cause an underrun after every frame.
    const PRIME_MS: u32 = 100;

    #[derive(Default)]
    struct Queue {
        samples: VecDeque<i16>,
        /// Playing; cleared by an underrun, set again once `PRIME_MS` are queued.
        primed: bool,
        /// The first fatal stream error, reported by the next `play`.
        failure: Option<String>,
    }

    pub(super) struct AlsaOutput {
        queue: Arc<Mutex<Queue>>,
        capacity: usize,
        prime: usize,
        resampler: Resampler,
        samples: u64,
        // Dropping the stream stops playback; it is otherwise only held.
        _stream: cpal::Stream,
    }

    impl AlsaOutput {
        pub(super) fn open(name: Option<&str>) -> Result<Self, OutputError> {
            let host = cpal::default_host();
            let device = match name {
                None => host.default_output_device(),
                Some(name) => {
                    let id = format!("alsa:{name}").parse().ok();
                    id.and_then(|id| host.device_by_id(&id))
                }
            };
            let device = device.ok_or_else(|| {
                let name = name.unwrap_or("the default device");
                OutputError::NoDevice(format!("{name} not found"))
            })?;
            let fail =
                |why: &dyn std::fmt::Display| OutputError::NoDevice(format!("{device}: {why}"));
            let usable = |format| matches!(format, SampleFormat::F32 | SampleFormat::I16);
            // Keep the device's preferred rate (usually 48 kHz) and resample to it, but in
            // a sample format this side produces.
            let config = device.default_output_config().map_err(|e| fail(&e))?;
            let config = if usable(config.sample_format()) {
                config
            } else {
                let ranges = device.supported_output_configs().map_err(|e| fail(&e))?;
                ranges
                    .filter(|range| usable(range.sample_format()))
                    .find_map(|range| range.try_with_sample_rate(config.sample_rate()))
                    .ok_or_else(|| fail(&"takes neither f32 nor i16 samples"))?
            };
            let queue = Arc::new(Mutex::new(Queue::default()));
            let stream = match config.sample_format() {
                SampleFormat::I16 => build::<i16>(&device, config.config(), &queue),
                _ => build::<f32>(&device, config.config(), &queue),
            };
            let stream = stream.map_err(|e| fail(&e))?;
            stream.play().map_err(|e| fail(&e))?;
            let (rate, channels) = (config.sample_rate(), config.channels());
            tracing::info!(%device, rate, channels, "ALSA output open");
            let ms = |ms: u32| (u64::from(rate) * u64::from(ms) / 1000) as usize;
            Ok(Self {
                queue,
                capacity: ms(QUEUE_MS),
                prime: ms(PRIME_MS),
                resampler: Resampler::new(rate),
                samples: 0,
                _stream: stream,
            })
        }
    }

    fn build<T: SizedSample + FromSample<i16>>(
        device: &cpal::Device,
        config: cpal::StreamConfig,
        queue: &Arc<Mutex<Queue>>,
    ) -> Result<cpal::Stream, cpal::Error> {
        let channels = usize::from(config.channels).max(1);
        let (source, errors) = (queue.clone(), queue.clone());
        let fill = move |data: &mut [T], _: &cpal::OutputCallbackInfo| {
            let mut queue = source.lock().unwrap_or_else(PoisonError::into_inner);
            for frame in data.chunks_mut(channels) {
                // An underrun plays silence until the queue is primed again.
                let sample = if queue.primed {
                    queue.samples.pop_front()
                } else {
                    None
                };
                queue.primed = sample.is_some();
                frame.fill(T::from_sample(sample.unwrap_or(0)));
            }
        };
        let report = move |error: cpal::Error| {
            if matches!(error.kind(), cpal::ErrorKind::Xrun) {
                tracing::debug!(%error, "ALSA xrun");
                return;
            }
            tracing::warn!(%error, "ALSA output stream error");
            let mut queue = errors.lock().unwrap_or_else(PoisonError::into_inner);
            queue.failure.get_or_insert_with(|| error.to_string());
        };
        device.build_output_stream(config, fill, report, None)
    }

    impl Output for AlsaOutput {
        fn play(&mut self, samples: &[i16], sample_rate: u32) -> Result<(), OutputError> {
            let samples = self.resampler.convert(samples, sample_rate);
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(failure) = &queue.failure {
                return Err(OutputError::Device(failure.clone()));
            }
            queue.samples.extend(samples);
            // The card's clock runs slower than the sender's, or frames came in a burst:
            // drop the oldest audio rather than let the delay grow.
            let excess = queue.samples.len().saturating_sub(self.capacity);
            queue.samples.drain(..excess);
            queue.primed |= queue.samples.len() >= self.prime;
            self.samples += samples.len() as u64;
            Ok(())
        }

        fn samples(&self) -> u64 {
            self.samples
        }
    }

    #[cfg(test)]
    mod tests {
        use std::time::{Duration, Instant};

        use super::*;

        // ALSA's `null` PCM (alsa-lib's stock configuration) takes audio like a card
        // would, so the whole path runs on machines without one.
        #[test]
        fn the_null_pcm_drains_what_play_queues_and_the_queue_stays_bounded() {
            let mut output = AlsaOutput::open(Some("null")).unwrap();
            output.play(&[1_000; 16_000], 8_000).unwrap();
            let queued = output.queue.lock().unwrap().samples.len();
            assert!(queued <= output.capacity, "{queued} queued");
            assert!(output.samples() > 0);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !output.queue.lock().unwrap().samples.is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "the callback never drained the queue"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            output.play(&[0; 160], 8_000).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::wav;

    fn ramp(len: usize, step: i16) -> Vec<i16> {
        (0..len).map(|i| i as i16 * step).collect()
    }

    #[test]
    fn every_documented_spec_parses_and_prints_back() {
        let cases = [
            ("null", OutputSpec::Null),
            ("wav:/tmp/out.wav", OutputSpec::Wav("/tmp/out.wav".into())),
            ("alsa", OutputSpec::Alsa { device: None }),
            (
                "alsa:hw:0,0",
                OutputSpec::Alsa {
                    device: Some("hw:0,0".into()),
                },
            ),
            (
                "alsa:plughw:CARD=Device",
                OutputSpec::Alsa {
                    device: Some("plughw:CARD=Device".into()),
                },
            ),
        ];
        for (text, spec) in cases {
            assert_eq!(text.parse::<OutputSpec>(), Ok(spec.clone()));
            assert_eq!(spec.to_string(), text);
        }
    }

    #[test]
    fn malformed_specs_are_rejected_with_the_accepted_forms() {
        for text in [
            "",
            "wav",
            "wav:",
            "alsa:",
            "null:x",
            "pulse",
            "WAV:x.wav",
            ":x",
        ] {
            let error = text.parse::<OutputSpec>().unwrap_err();
            assert!(
                error.contains("expected null, wav:PATH, alsa or alsa:DEVICE"),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn the_null_output_counts_samples() {
        let mut output = open(&OutputSpec::Null).unwrap();
        output.play(&[0; 160], 8_000).unwrap();
        output.play(&[0; 960], 48_000).unwrap();
        assert_eq!(output.samples(), 1_120);
    }

    #[test]
    fn a_wav_output_records_at_the_first_streams_rate_and_resamples_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.wav");
        let mut output = open(&OutputSpec::Wav(path.clone())).unwrap();
        assert!(!path.exists(), "the file waits for the first frame");
        let first = ramp(320, 10);
        output.play(&first, 16_000).unwrap();
        output.play(&[100; 160], 8_000).unwrap();
        let (rate, channels, samples) = wav::read(&path).unwrap();
        assert_eq!((rate, channels), (16_000, 1));
        assert_eq!(samples[..320], first[..]);
        // 160 samples at 8 kHz: the 319 output positions that land on or between them.
        assert_eq!(samples[320..], [100; 319][..]);
        assert_eq!(output.samples(), samples.len() as u64);
    }

    #[test]
    fn a_wav_output_follows_a_rate_change_before_any_audio() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.wav");
        let mut output = open(&OutputSpec::Wav(path.clone())).unwrap();
        output.play(&[], 8_000).unwrap();
        output.play(&[7; 960], 48_000).unwrap();
        assert_eq!(wav::read(&path).unwrap(), (48_000, 1, vec![7; 960]));
    }

    #[test]
    fn a_wav_output_into_a_missing_directory_fails_at_open() {
        let spec = OutputSpec::Wav("/nonexistent-loaxa-dir/out.wav".into());
        let error = open(&spec).err().unwrap();
        assert!(matches!(error, OutputError::Wav { .. }), "{error}");
        assert!(
            error.to_string().contains("/nonexistent-loaxa-dir"),
            "{error}"
        );
    }

    #[test]
    fn an_alsa_device_that_does_not_exist_is_a_clear_error() {
        let spec = OutputSpec::Alsa {
            device: Some("loaxa-no-such-device".into()),
        };
        let error = open(&spec).err().unwrap();
        assert!(matches!(error, OutputError::NoDevice(_)), "{error}");
        assert!(
            error.to_string().starts_with("no ALSA output device: "),
            "{error}"
        );
        assert!(error.to_string().contains("--features alsa"), "{error}");
    }

    #[cfg(not(feature = "alsa"))]
    #[test]
    fn a_build_without_alsa_says_so() {
        let error = open(&OutputSpec::Alsa { device: None }).err().unwrap();
        assert!(
            error.to_string().contains("this build has no ALSA support"),
            "{error}"
        );
    }

    #[test]
    fn equal_rates_pass_through_untouched() {
        let mut resampler = Resampler::new(8_000);
        let input = ramp(160, 3);
        assert_eq!(resampler.convert(&input, 8_000), &input[..]);
    }

    #[test]
    fn upsampling_interpolates_between_neighbours() {
        let mut resampler = Resampler::new(48_000);
        let out = resampler.convert(&[0, 600, 1200], 8_000).to_vec();
        assert_eq!(
            out,
            [
                0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200
            ]
        );
    }

    #[test]
    fn frame_edges_are_interpolated_as_if_the_stream_were_one_piece() {
        let input: Vec<i16> = (0..4_410)
            .map(|i| ((i as f32 * 0.013).sin() * 30_000.0) as i16)
            .collect();
        for (from, to) in [
            (8_000, 48_000),
            (16_000, 44_100),
            (44_100, 48_000),
            (48_000, 16_000),
        ] {
            let whole = Resampler::new(to).convert(&input, from).to_vec();
            let mut resampler = Resampler::new(to);
            let mut framed = Vec::new();
            for frame in input.chunks(147) {
                framed.extend_from_slice(resampler.convert(frame, from));
            }
            assert_eq!(framed, whole, "{from} -> {to}");
        }
    }

    #[test]
    fn a_long_stream_keeps_the_exact_rate_ratio() {
        // Ten minutes of 20 ms G.722 frames to 44.1 kHz: any per-frame rounding would drift.
        let mut resampler = Resampler::new(44_100);
        let frame = [0i16; 320];
        let frames = 30_000u64;
        let out: u64 = (0..frames)
            .map(|_| resampler.convert(&frame, 16_000).len() as u64)
            .sum();
        let input = frames * 320;
        assert_eq!(out, (input - 1) * 44_100 / 16_000 + 1);
    }

    #[test]
    fn a_new_input_rate_restarts_the_resampler() {
        let mut resampler = Resampler::new(16_000);
        resampler.convert(&[1_000; 3], 8_000);
        // Nothing of the old stream leaks in: the new one starts at its own first sample.
        assert_eq!(resampler.convert(&[-500; 3], 32_000), [-500, -500]);
    }

    #[test]
    fn a_zero_input_rate_does_not_hang() {
        let mut resampler = Resampler::new(48_000);
        assert_eq!(resampler.convert(&[1, 2], 0), [1, 2]);
    }
}
