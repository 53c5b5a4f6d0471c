using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// The checks made on an output path before any work starts (SPEC §15: never touch the input): the output is absent
/// or a regular file (not a folder, device, FIFO or socket, and not a symbolic link, which a commit by rename would
/// replace instead of writing through); its folder exists or can be made; and it is none of the files the input is
/// read from — whatever name reaches them (symbolic links, <c>..</c>, hard links) — nor inside the input's model
/// folder unless forced.
/// </summary>
public static class OutputGuard
{
    /// <summary>The name of the option that lets an output go into the input's model folder.</summary>
    public const string ForceName = "OutputGuard.Force";

    /// <summary>Checks <paramref name="output"/> against <paramref name="input"/> (and any other files the run reads)
    /// and returns its full path.</summary>
    /// <exception cref="InvalidOptionException">The output is not a place to write to, or would touch the input.</exception>
    public static string Check(string output, ICheckpoint? input = null, IEnumerable<string>? alsoRead = null, bool force = false)
    {
        const string option = "output";
        if (string.IsNullOrWhiteSpace(output)) throw new InvalidOptionException(option, "the output path is empty");
        string full = Path.GetFullPath(output);
        var info = new FileInfo(full);
        if (info.LinkTarget is not null)
            throw new InvalidOptionException(option, $"{output} is a symbolic link (to {info.LinkTarget}); give the real path, or remove the link");
        switch (FileIdentity.KindOf(full))
        {
            case FileIdentity.Kind.Folder:
                throw new InvalidOptionException(option, $"{output} is a folder; give a file name inside it");
            case FileIdentity.Kind.Other:
                throw new InvalidOptionException(option, $"{output} is not a regular file or folder (a device, FIFO or socket); outputs are written as files");
        }
        CheckParents(full, output, option);

        var read = (input?.Files ?? []).Concat(alsoRead ?? []).ToList();
        foreach (string file in read)
            if ((File.Exists(full) && FileIdentity.Same(full, file)) || FileIdentity.Resolve(full) == FileIdentity.Resolve(file))
                throw new InvalidOptionException(option, $"{output} is {Describe(file, input)}, which this run reads; writing there would destroy it");
        if (!force) CheckNotInside(FileIdentity.Resolve(Path.GetDirectoryName(full)!), orSame: true, input, output, option);
        return full;
    }

    /// <summary>
    /// As <see cref="Check"/> for an output folder (a model folder written whole, <see cref="CheckpointWriter.ToFolder"/>): it
    /// must be absent or an empty folder, not a symbolic link, not the input's folder or inside it unless forced, and no
    /// file the run reads may be inside it. Returns its full path.
    /// </summary>
    /// <exception cref="InvalidOptionException">The folder is not a place to write a model to, or would touch the input.</exception>
    public static string CheckFolder(string output, ICheckpoint? input = null, IEnumerable<string>? alsoRead = null, bool force = false)
    {
        const string option = "output";
        if (string.IsNullOrWhiteSpace(output)) throw new InvalidOptionException(option, "the output path is empty");
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(output));
        if (new FileInfo(full).LinkTarget is { } link)
            throw new InvalidOptionException(option, $"{output} is a symbolic link (to {link}); give the real path, or remove the link");
        string resolved = FileIdentity.Resolve(full);
        foreach (string file in (input?.Files ?? []).Concat(alsoRead ?? []))
        {
            string read = FileIdentity.Resolve(file);
            if ((File.Exists(full) && FileIdentity.Same(full, file)) || read == resolved)
                throw new InvalidOptionException(option, $"{output} is {Describe(file, input)}, which this run reads; writing there would destroy it");
            if (read.StartsWith(resolved + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                throw new InvalidOptionException(option, $"{output} holds {Describe(file, input)}, which this run reads; writing there would destroy it");
        }
        switch (FileIdentity.KindOf(full))
        {
            case FileIdentity.Kind.Regular:
                throw new InvalidOptionException(option,
                    $"{output} is a file; a model folder is written there (name the output NAME.safetensors for a single file)");
            case FileIdentity.Kind.Other:
                throw new InvalidOptionException(option, $"{output} is not a regular file or folder (a device, FIFO or socket)");
        }
        CheckParents(full, output, option);
        if (!force) CheckNotInside(resolved, orSame: false, input, output, option);
        if (FileIdentity.KindOf(full) == FileIdentity.Kind.Folder && Directory.EnumerateFileSystemEntries(full).Any())
            throw new InvalidOptionException(option, $"{output} is a folder that is not empty; give a new or empty folder (nothing in it is replaced)");
        return full;
    }

    /// <summary>Every existing ancestor of <paramref name="full"/> up to the first folder must be a folder.</summary>
    private static void CheckParents(string full, string output, string option)
    {
        for (string? parent = Path.GetDirectoryName(full); !string.IsNullOrEmpty(parent); parent = Path.GetDirectoryName(parent))
        {
            var kind = FileIdentity.KindOf(parent);
            if (kind == FileIdentity.Kind.Folder) break;
            if (kind != FileIdentity.Kind.Missing)
                throw new InvalidOptionException(option, $"{output} cannot be created: {parent} is a file, not a folder");
        }
    }

    /// <summary>Refuses <paramref name="target"/> (resolved) inside a model folder input (or equal to it when
    /// <paramref name="orSame"/>), unless forced.</summary>
    private static void CheckNotInside(string target, bool orSame, ICheckpoint? input, string output, string option)
    {
        if (input is not { Kind: CheckpointKind.HuggingFaceDirectory or CheckpointKind.ShardedSafetensors }) return;
        string folder = FileIdentity.Resolve(Path.GetDirectoryName(input.Files[0])!);
        if ((orSame && target == folder) || target.StartsWith(folder + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new InvalidOptionException(option,
                $"{output} is inside the model folder {folder}; write elsewhere, or set {ForceName} to allow it (its own files stay refused)");
    }

    private static string Describe(string file, ICheckpoint? input) =>
        input is not null && input.Files.Contains(file) ? $"a file of the model {input.Path} ({file})" : file;
}
