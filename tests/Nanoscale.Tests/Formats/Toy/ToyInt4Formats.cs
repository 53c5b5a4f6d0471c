using Nanoscale.Formats;

namespace Nanoscale.Tests.Formats.Toy;

/// <summary>The toy format's row of the format table: a name, a summary, its nominal footprint, no options.</summary>
internal static class ToyInt4Formats
{
    public static IEnumerable<FormatTraits> Traits()
    {
        yield return new FormatTraits("toyint4", [], "toy: MXINT4 elements, E8M0 scale per 16 (4.5 bpw)", 4.5, [],
            (_, canonical) => new ToyInt4Codec(canonical));
    }
}
