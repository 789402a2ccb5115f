import Shared

/// How a ``LinkImpairment`` reads in wirefilter's terms: its start options and its
/// management commands. Pure, so that what a user sets is exactly what wirefilter gets.
///
/// Measured with wirefilter 2.3.2: `delay` takes milliseconds with decimals (`delay 0.25`,
/// `delay 12.5+2.5`: delay + jitter, uniformly distributed, shown back as `12.5+2.5U`),
/// `loss` and `dup` percentages with decimals, `lostburst` a mean burst length (0: independent
/// losses), `bandwidth` BYTES per second with decimals (`showinfo` prints values with six
/// significant digits: 1000.125 shows as `1000.12`). Every value applies to both directions.
/// A value of 0 turns a parameter off. Out-of-range values are taken silently (`loss 150`
/// answers `1000 Success`): ``LinkImpairment/check()`` and its parsing are the only guard.
enum WirefilterSettings {
    /// The management commands that give a running wirefilter exactly `impairment`: every
    /// parameter is set, those not in it to 0, so that the result does not depend on what the
    /// wirefilter had before (idempotent; also after an adoption).
    static func commands(for impairment: LinkImpairment) -> [String] {
        [
            "delay " + delay(impairment),
            "loss " + percent(impairment.lossMillipercent ?? 0),
            "lostburst " + String(impairment.lossBurst ?? 0),
            "dup " + percent(impairment.duplicateMillipercent ?? 0),
            "bandwidth " + bytesPerSecond(impairment.rateBitsPerSecond ?? 0),
        ]
    }

    /// The start options for `impairment`: only its non-zero parameters (wirefilter starts with
    /// every parameter at 0).
    static func options(for impairment: LinkImpairment) -> [String] {
        var options: [String] = []
        if (impairment.delayMicroseconds ?? 0) > 0 || (impairment.jitterMicroseconds ?? 0) > 0 {
            options += ["-d", delay(impairment)]
        }
        if let loss = impairment.lossMillipercent, loss > 0 { options += ["-l", percent(loss)] }
        if let burst = impairment.lossBurst, burst > 0 { options += ["-L", String(burst)] }
        if let dup = impairment.duplicateMillipercent, dup > 0 { options += ["-D", percent(dup)] }
        if let rate = impairment.rateBitsPerSecond, rate > 0 { options += ["-b", bytesPerSecond(rate)] }
        return options
    }

    /// `50` or `50+10` (milliseconds, + jitter), `0.25` for 250 us.
    static func delay(_ impairment: LinkImpairment) -> String {
        let delay = decimal(impairment.delayMicroseconds ?? 0, scale: 1000)
        guard let jitter = impairment.jitterMicroseconds, jitter > 0 else { return delay }
        return delay + "+" + decimal(jitter, scale: 1000)
    }

    /// Thousandths of a percent as a percentage: 1500 -> `1.5`.
    static func percent(_ millipercent: Int) -> String { decimal(millipercent, scale: 1000) }

    /// Bit/s as bytes/s, exactly: 10_000_000 -> `1250000`, 1001 -> `125.125` (an eighth is
    /// 0.125: three decimals always suffice).
    static func bytesPerSecond(_ bits: Int) -> String { decimal(bits * 125, scale: 1000) }

    /// `value / scale` with as many decimals as needed (scale a power of ten), no trailing zeros.
    static func decimal(_ value: Int, scale: Int) -> String {
        let whole = value / scale
        var fraction = value % scale
        guard fraction != 0 else { return String(whole) }
        var digits = ""
        var place = scale / 10
        while place > 0, fraction > 0 {
            digits.append(Character(String(fraction / place)))
            fraction %= place
            place /= 10
        }
        return "\(whole).\(digits)"
    }
}
