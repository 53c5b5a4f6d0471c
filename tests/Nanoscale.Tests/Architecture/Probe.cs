// Deliberate wrong-way arrows for ArchitectureTests.TheCheckerSeesAWrongWayArrow: the namespaces below mimic two rooms
// of the library (Formats below Pipeline); the checker, run over this assembly with this prefix, must report both
// Formats → Pipeline uses and must not report the Pipeline → Formats one.

namespace Nanoscale.Tests.Architecture.Probe.Pipeline
{
    internal sealed class Orchestrator
    {
        public static int Run() => 1;
    }

    internal sealed class RightWay
    {
        public int Use(Formats.WrongWayInSignature codec) => codec.GetHashCode();
    }
}

namespace Nanoscale.Tests.Architecture.Probe.Formats
{
    internal sealed class WrongWayInSignature
    {
        public Pipeline.Orchestrator? Owner { get; set; }
    }

    internal sealed class WrongWayInBody
    {
        public int Quantize() => Pipeline.Orchestrator.Run() + 1;
    }
}
