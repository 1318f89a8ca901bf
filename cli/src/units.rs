//! Quantities on the command line, Kubernetes style: CPU as cores (`1.5`)
//! or millicores (`1500m`); bytes with `Ki Mi Gi Ti` (powers of 1024) or
//! `k M G T` (powers of 1000) suffixes. Errors name the flag.

/// A quantity parser: `(flag, text) -> amount`, the error naming the flag.
pub type Unit = fn(&str, &str) -> Result<u64, String>;

/// Parses a CPU quantity into millicores.
pub fn cpu(flag: &str, s: &str) -> Result<u64, String> {
    let bad = || format!("{flag}: {s:?} is not a CPU quantity (e.g. 500m, 2, 1.5)");
    if let Some(m) = s.strip_suffix('m') {
        return m.parse::<u64>().map_err(|_| bad());
    }
    let cores: f64 = s.parse().map_err(|_| bad())?;
    if !(cores.is_finite() && cores >= 0.0) {
        return Err(bad());
    }
    Ok((cores * 1000.0).round() as u64)
}

/// Parses a byte quantity (`64Mi`, `2G`, `1048576`).
pub fn bytes(flag: &str, s: &str) -> Result<u64, String> {
    const SUFFIXES: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let bad = || format!("{flag}: {s:?} is not a byte quantity (e.g. 64Mi, 2Gi, 500M, 1048576)");
    let (num, mult) = SUFFIXES.iter().find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m))).unwrap_or((s, 1));
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(bad());
    }
    Ok((v * mult as f64).round() as u64)
}

/// A duration: `500ms`, `90s`, `10m`, `2h`, or plain seconds.
pub fn duration(flag: &str, s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{flag}: {s:?} is not a duration (e.g. 90s, 10m, 1h)");
    let (num, ms) = [("ms", 1u64), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)]
        .iter()
        .find_map(|(suf, m)| s.strip_suffix(suf).filter(|n| !n.ends_with('m')).map(|n| (n, *m)))
        .unwrap_or((s, 1_000));
    let v: u64 = num.parse().map_err(|_| bad())?;
    v.checked_mul(ms).map(std::time::Duration::from_millis).ok_or_else(bad)
}

/// `MIN:MAX` with the resource's unit parser.
pub fn range(flag: &str, s: &str, unit: Unit) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once(':').ok_or_else(|| format!("{flag}: {s:?} must be MIN:MAX (e.g. 100m:2)"))?;
    let (min, max) = (unit(flag, a)?, unit(flag, b)?);
    if min > max {
        return Err(format!("{flag}: min {a} is greater than max {b}"));
    }
    Ok((min, max))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = |s: &str| duration("--duration", s).map(|d| d.as_millis());
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("90s"), Ok(90_000));
        assert_eq!(ms("10m"), Ok(600_000));
        assert_eq!(ms("2h"), Ok(7_200_000));
        assert_eq!(ms("15"), Ok(15_000));
        assert!(ms("ten").unwrap_err().starts_with("--duration: \"ten\""));
        assert!(ms("-1s").is_err());
    }

    #[test]
    fn quantities() {
        assert_eq!(cpu("--cpu", "500m").unwrap(), 500);
        assert_eq!(cpu("--cpu", "1.5").unwrap(), 1500);
        assert_eq!(cpu("--cpu", "2").unwrap(), 2000);
        assert!(cpu("--cpu", "-1").unwrap_err().contains("--cpu"));
        assert!(cpu("--cpu", "x").is_err());
        assert_eq!(bytes("--mem", "64Mi").unwrap(), 64 << 20);
        assert_eq!(bytes("--mem", "2Gi").unwrap(), 2 << 30);
        assert_eq!(bytes("--mem", "1.5G").unwrap(), 1_500_000_000);
        assert_eq!(bytes("--mem", "4096").unwrap(), 4096);
        assert!(bytes("--mem", "12Qi").unwrap_err().contains("--mem"));
        assert_eq!(range("--cpu", "100m:2", cpu).unwrap(), (100, 2000));
        assert!(range("--cpu", "2:1", cpu).unwrap_err().contains("greater"));
        assert!(range("--mem", "64Mi", bytes).unwrap_err().contains("MIN:MAX"));
    }
}
