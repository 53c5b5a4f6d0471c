using Nanoscale.Fuzz;

// nanoscale-fuzz TARGET              run under afl-fuzz (SharpFuzz's out-of-process loop; input on stdin)
// nanoscale-fuzz TARGET replay DIR   run every file of DIR once in this process (a crash prints its file and throws)
// nanoscale-fuzz TARGET seed FILE    write the valid input of a model-folder target (index, config) to FILE
if (args.Length < 1 || !Harness.Targets.Contains(args[0]))
{
    Console.Error.WriteLine($"usage: Nanoscale.Fuzz TARGET [replay DIR]; targets: {string.Join(", ", Harness.Targets)}");
    return 2;
}
string target = args[0];
if (args.Length >= 3 && args[1] == "seed")
{
    Harness.WriteSeed(target, args[2]);
    return 0;
}
var work = Directory.CreateTempSubdirectory("nanoscale-fuzz-").FullName;
try
{
    if (args.Length >= 3 && args[1] == "replay")
    {
        int files = 0;
        foreach (var file in Directory.EnumerateFiles(args[2]).Order())
        {
            try { Harness.Run(target, File.ReadAllBytes(file), work); }
            catch (Exception e)
            {
                Console.Error.WriteLine($"{file}: {e.GetType().Name}: {e.Message}");
                throw;
            }
            files++;
        }
        Console.WriteLine($"{target}: {files} inputs, no undocumented exception");
        return 0;
    }
    SharpFuzz.Fuzzer.OutOfProcess.Run(stream =>
    {
        using var memory = new MemoryStream();
        stream.CopyTo(memory);
        Harness.Run(target, memory.ToArray(), work);
    });
    return 0;
}
finally
{
    try { Directory.Delete(work, recursive: true); } catch (IOException) { }
}
