//! The load simulator: how a backend's background load, and the rate the
//! producers offer, move over a run.
//!
//! A [`Pattern`] maps progress through a run (0 to 1) to a background load
//! (0 to 1); [`offered_rate`] turns that load into the items per second the
//! producers offer, from [`BASE_RATE`] of the peak at load 0 to all of it at
//! load 1.
//!
//! ```
//! use ringbatch_demo::load::{Pattern, offered_rate};
//!
//! let pattern: Pattern = "sinewave".parse().unwrap();
//! assert_eq!(pattern, Pattern::Sine);
//! assert_eq!(Pattern::Gradual.load(0.25), 0.25);
//! assert_eq!(offered_rate(1000.0, 1.0), 1000.0);
//! ```

use std::fmt;
use std::str::FromStr;

use clap::ValueEnum;

/// The share of the peak rate offered at background load 0.
pub const BASE_RATE: f64 = 0.35;

/// Where the [`Pattern::Spikes`] bursts start, as progress through the run.
pub const SPIKE_STARTS: [f64; 3] = [0.2, 0.5, 0.8];
/// How long each burst lasts, as a share of the run.
pub const SPIKE_LENGTH: f64 = 0.1;
/// The load between bursts.
pub const SPIKE_FLOOR: f64 = 0.1;
/// Full waves of [`Pattern::Sine`] over a run.
pub const SINE_WAVES: f64 = 2.0;

/// How the background load moves over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pattern {
    /// Load 0.5 throughout.
    Constant,
    /// Two smooth waves between 0 and 1, starting and ending at 0.
    #[value(alias = "sinewave")]
    Sine,
    /// Load 0.1, with three bursts to 1 (at 20, 50 and 80 % of the run, each
    /// a tenth of it).
    Spikes,
    /// A ramp from 0 to 1.
    Gradual,
}

impl Pattern {
    /// Every pattern.
    pub const ALL: [Pattern; 4] = [
        Pattern::Constant,
        Pattern::Sine,
        Pattern::Spikes,
        Pattern::Gradual,
    ];

    /// The background load, 0 to 1, at `progress` through the run (clamped
    /// to 0 to 1; not a number reads as 0).
    pub fn load(self, progress: f64) -> f64 {
        let u = if progress.is_nan() {
            0.0
        } else {
            progress.clamp(0.0, 1.0)
        };
        match self {
            Pattern::Constant => 0.5,
            Pattern::Sine => 0.5 - 0.5 * (SINE_WAVES * std::f64::consts::TAU * u).cos(),
            Pattern::Spikes => {
                let burst = SPIKE_STARTS
                    .iter()
                    .any(|&start| (start..start + SPIKE_LENGTH).contains(&u));
                if burst { 1.0 } else { SPIKE_FLOOR }
            }
            Pattern::Gradual => u,
        }
    }

    /// The pattern's name, as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Constant => "constant",
            Pattern::Sine => "sine",
            Pattern::Spikes => "spikes",
            Pattern::Gradual => "gradual",
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPattern(pub String);

impl fmt::Display for UnknownPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown load pattern `{}`: use constant, sine (or sinewave), spikes or gradual",
            self.0
        )
    }
}

impl std::error::Error for UnknownPattern {}

impl FromStr for Pattern {
    type Err = UnknownPattern;

    /// Parses a name as the command line does (`sinewave` is `sine`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        <Pattern as ValueEnum>::from_str(text.trim(), true)
            .map_err(|_| UnknownPattern(text.to_owned()))
    }
}

/// Items per second offered at background `load` (clamped to 0 to 1) when
/// the pattern's peak is `peak` items per second.
pub fn offered_rate(peak: f64, load: f64) -> f64 {
    let load = if load.is_nan() {
        0.0
    } else {
        load.clamp(0.0, 1.0)
    };
    peak * (BASE_RATE + (1.0 - BASE_RATE) * load)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The load at `n + 1` evenly spaced points through the run.
    fn trace(pattern: Pattern, n: usize) -> Vec<f64> {
        (0..=n).map(|i| pattern.load(i as f64 / n as f64)).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn every_pattern_stays_between_0_and_1_even_outside_the_run() {
        for pattern in Pattern::ALL {
            for progress in [-1.0, f64::NAN, f64::NEG_INFINITY, 2.0, f64::INFINITY] {
                let load = pattern.load(progress);
                assert!(
                    (0.0..=1.0).contains(&load),
                    "{pattern} at {progress}: {load}"
                );
            }
            for load in trace(pattern, 1000) {
                assert!((0.0..=1.0).contains(&load), "{pattern}: {load}");
            }
        }
    }

    #[test]
    fn constant_is_flat_at_one_half() {
        assert!(trace(Pattern::Constant, 100).iter().all(|&l| close(l, 0.5)));
    }

    #[test]
    fn sine_makes_two_full_waves_from_0_to_1() {
        let p = Pattern::Sine;
        for (progress, expected) in [
            (0.0, 0.0),
            (0.25, 1.0),
            (0.5, 0.0),
            (0.75, 1.0),
            (1.0, 0.0),
            (0.125, 0.5),
        ] {
            assert!(
                close(p.load(progress), expected),
                "sine at {progress}: {} (expected {expected})",
                p.load(progress)
            );
        }
        // Two peaks: the rises and falls alternate four times.
        let t = trace(p, 400);
        let turns = t
            .windows(3)
            .filter(|w| (w[1] - w[0]) * (w[2] - w[1]) < 0.0)
            .count();
        assert_eq!(turns, 3, "peak, trough, peak between the ends");
    }

    #[test]
    fn spikes_are_three_bursts_to_1_over_a_floor_of_0_1() {
        let t = trace(Pattern::Spikes, 1000);
        assert!(
            t.iter().all(|&l| close(l, 1.0) || close(l, SPIKE_FLOOR)),
            "only two levels"
        );
        let bursts = t.windows(2).filter(|w| w[0] < 0.5 && w[1] > 0.5).count();
        assert_eq!(bursts, 3, "three rises to the burst level");
        let share = t.iter().filter(|&&l| close(l, 1.0)).count() as f64 / t.len() as f64;
        assert!(
            (share - 0.3).abs() < 0.01,
            "the bursts cover 30 % of the run, got {share}"
        );
        for start in SPIKE_STARTS {
            assert!(
                close(Pattern::Spikes.load(start + 0.05), 1.0),
                "in the burst at {start}"
            );
            assert!(
                close(Pattern::Spikes.load(start - 0.05), SPIKE_FLOOR),
                "before it"
            );
        }
    }

    #[test]
    fn gradual_ramps_steadily_from_0_to_1() {
        let t = trace(Pattern::Gradual, 100);
        assert!(close(t[0], 0.0) && close(t[100], 1.0), "the ends");
        assert!(
            t.windows(2).all(|w| close(w[1] - w[0], 0.01)),
            "equal steps: a straight ramp"
        );
    }

    #[test]
    fn names_parse_back_and_sinewave_is_sine() {
        for pattern in Pattern::ALL {
            assert_eq!(pattern.name().parse::<Pattern>(), Ok(pattern));
        }
        assert_eq!("sinewave".parse::<Pattern>(), Ok(Pattern::Sine));
        assert_eq!("SineWave".parse::<Pattern>(), Ok(Pattern::Sine));
        assert_eq!(
            "square".parse::<Pattern>(),
            Err(UnknownPattern("square".to_owned()))
        );
    }

    #[test]
    fn the_offered_rate_runs_from_the_base_share_to_the_peak() {
        assert!(close(offered_rate(1000.0, 0.0), 350.0));
        assert!(close(offered_rate(1000.0, 1.0), 1000.0));
        assert!(close(offered_rate(1000.0, 0.5), 675.0));
        assert!(close(offered_rate(1000.0, 7.0), 1000.0), "load clamped");
        assert!(
            close(offered_rate(1000.0, f64::NAN), 350.0),
            "NaN reads as 0"
        );
    }
}
