namespace Nanoscale.Formats;

/// <summary>How an element or scale cast resolves a value that lies exactly halfway between two codes (SPEC §2).</summary>
public enum RoundingMode
{
    /// <summary>Round to nearest; a tie goes to the code whose least significant bit is 0 (the default).</summary>
    NearestEven,

    /// <summary>Round to nearest; a tie goes to the larger magnitude. Only for comparison with tools that use it.</summary>
    NearestAway,
}
