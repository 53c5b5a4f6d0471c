using System.Diagnostics;
using Nanoscale.Pipeline;

namespace Nanoscale.Cli.Rendering;

/// <summary>
/// Shows <see cref="PipelineProgress"/> on standard error: a single rewritten line on a terminal, otherwise a line
/// at most every few seconds so logs stay short.
/// </summary>
internal sealed class ProgressSink : IProgress<PipelineProgress>
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly bool _interactive = !Console.IsErrorRedirected;
    private readonly object _gate = new();
    private long _lastMs = -100_000;
    private bool _wroteLine;

    public void Report(PipelineProgress value)
    {
        lock (_gate)
        {
            long now = _clock.ElapsedMilliseconds;
            bool finished = value.Done >= value.Total;
            if (!finished && now - _lastMs < (_interactive ? 100 : 5000)) return;
            _lastMs = now;
            double percent = value.Total > 0 ? 100.0 * value.Done / value.Total : 100;
            var line = $"{value.Stage} {percent,5:0.0}%  {value.Tensor ?? (finished ? "done" : value.Unit)}  ({_clock.Elapsed.TotalSeconds:0.0} s)";
            if (_interactive)
            {
                var width = Math.Max(20, SafeWidth() - 1);
                Console.Error.Write("\r" + (line.Length > width ? line[..width] : line.PadRight(width)));
                _wroteLine = true;
                if (finished) Finish();
            }
            else if (!finished || !_wroteLine)
            {
                Console.Error.WriteLine(line);
                _wroteLine = finished;
            }
        }
    }

    /// <summary>Ends the progress line so later output starts on a fresh line.</summary>
    public void Finish()
    {
        if (_interactive && _wroteLine) Console.Error.WriteLine();
        _wroteLine = false;
    }

    private static int SafeWidth()
    {
        try { return Console.WindowWidth > 0 ? Console.WindowWidth : 100; }
        catch (IOException) { return 100; }
    }
}
