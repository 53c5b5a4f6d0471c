using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.LowRank;
using Nanoscale.Tensors;

namespace Nanoscale.Codecs;

/// <summary>
/// Stores a block format's output in the container (SPEC §8): <c>NAME.blocks</c> U8 <c>[rows, nblocks, bytes_per_block]</c>,
/// <c>NAME.scales</c> U8 <c>[rows, nblocks]</c> (U16 when a scale takes two bytes), and, for formats with per-tensor
/// data (NVFP4's FP32 tensor scale), <c>NAME.tensor_data</c> U8. Rows are streamed through the codec in chunks.
/// With <c>entropy=rans</c> the blocks and scales are further coded losslessly (SPEC §10: the codes of a block format
/// are far from uniform — MXFP4 scales carry ~1.5 of their 8 bits) and stored as <c>NAME.blocks.ans</c> and
/// <c>NAME.scales.ans</c>; decoding expands them once, then proceeds as usual.
/// </summary>
/// <remarks>With <c>ldlq=1</c> a weight that has a calibration Hessian (<see cref="EncodeOptions.Calibration"/>) is
/// rounded by LDLQ (GPTQ's rounding: <see cref="Ldlq"/> on <see cref="BlockGrid"/>, each block's scale chosen by the
/// format's own rule when LDLQ reaches it) instead of to nearest; the stored parts are the same arrays in the same
/// layout, so every reader decodes them as the plain format. Weights without a Hessian (embeddings, norms, anything
/// calibration did not see) are rounded to nearest, byte for byte the plain format's output.</remarks>
internal sealed class BlockTensorCodec(IBlockCodec codec, bool entropyCoded = false, bool ldlq = false, bool actOrder = false) : ITensorCodec
{

    /// <summary>Elements converted to float32 and quantized per step: bounds the working memory.</summary>
    private const int ChunkElements = 1 << 22;

    public IBlockCodec Codec { get; } = codec;

    public bool EntropyCoded { get; } = entropyCoded;

    /// <summary>Rounds calibrated weights by LDLQ (<c>ldlq=1</c>).</summary>
    public bool Ldlq { get; } = ldlq;

    /// <summary>LDLQ in act-order (<c>ldlq=act</c>).</summary>
    public bool ActOrder { get; } = ldlq && actOrder;

    /// <summary>The block codec's spec, then <c>entropy=rans</c> when the parts are entropy-coded and <c>ldlq=1</c>.</summary>
    public string Spec
    {
        get
        {
            if (!EntropyCoded && !Ldlq) return Codec.Spec;
            var spec = FormatSpec.Parse(Codec.Spec);
            if (EntropyCoded) spec = spec.With("entropy", "rans");
            if (Ldlq) spec = spec.With("ldlq", ActOrder ? "act" : "1");
            return spec.ToString();
        }
    }

    public bool IsLossless => false;

    /// <summary>False for formats that keep the scale inside the block (ggml's): no <c>scales</c> part is stored.</summary>
    private bool HasScales => Codec.ScaleBytesPerBlock > 0;

    public EncodedTensor Encode(TensorView source, EncodeOptions options, CancellationToken cancellationToken = default)
    {
        var tensor = source.Tensor;
        long rows = tensor.Rows, colsLong = tensor.Columns;
        if (colsLong > int.MaxValue) throw new InputException($"{tensor.Name}: rows of {colsLong} elements are too long");
        int cols = (int)colsLong, blocksPerRow = Codec.BlocksPerRow(cols);
        long blockBytes = rows * blocksPerRow * Codec.BytesPerBlock, scaleBytes = rows * blocksPerRow * Codec.ScaleBytesPerBlock;
        if (blockBytes > Array.MaxLength || scaleBytes > Array.MaxLength)
            throw new InputException($"{tensor.Name}: encoded parts over 2 GiB are not supported yet");
        var formatOptions = new CodecOptions
        {
            NonFinite = options.AllowNonFinite ? NonFinitePolicy.PassThrough : NonFinitePolicy.Throw,
            Parallelism = options.Parallelism,
        };
        if (Ldlq && options.Calibration?.Find(tensor.Name) is { IsIdentity: false } hessian)
            return EncodeLdlq(source, (int)rows, cols, hessian, options, cancellationToken);
        int rowsPerChunk = (int)Math.Clamp(ChunkElements / Math.Max(1, cols), 1, Math.Max(1, rows));
        var values = new float[(long)rowsPerChunk * cols];
        try
        {
            // Per-tensor data (e.g. NVFP4's amax) needs a first pass over the whole tensor.
            var tensorData = new byte[Codec.TensorDataBytes];
            if (Codec.TensorDataBytes > 0)
            {
                var accumulator = Codec.CreateTensorDataAccumulator(formatOptions);
                ForEachChunk(source, rows, cols, rowsPerChunk, values, cancellationToken, (chunk, first, _) => accumulator.Add(chunk, first * cols));
                accumulator.WriteTensorData(tensorData);
            }

            var blocks = new byte[blockBytes];
            var scales = new byte[scaleBytes];
            ForEachChunk(source, rows, cols, rowsPerChunk, values, cancellationToken, (chunk, first, count) =>
                Codec.Quantize(chunk, count, cols, tensorData, formatOptions, first * cols,
                    blocks.AsSpan((int)(first * blocksPerRow * Codec.BytesPerBlock), count * blocksPerRow * Codec.BytesPerBlock),
                    scales.AsSpan((int)(first * blocksPerRow * Codec.ScaleBytesPerBlock), count * blocksPerRow * Codec.ScaleBytesPerBlock)));

            var parameters = Ldlq ? new Dictionary<string, string> { ["rounding"] = "nearest (no calibration Hessian for this weight)" } : null;
            return new EncodedTensor(Parts(rows, blocksPerRow, blocks, scales, tensorData, options), parameters);
        }
        catch (NonFiniteValueException e)
        {
            throw e.In(tensor.Name, option: EncodeOptions.AllowNonFiniteName,
                remedy: $"use {EncodeOptions.AllowNonFiniteName} to store such blocks as NaN");
        }
    }

    /// <summary>The stored parts: blocks and scales (entropy-coded or not; no scales for ggml's formats), tensor data.</summary>
    private List<EncodedPart> Parts(long rows, int blocksPerRow, byte[] blocks, byte[] scales, byte[] tensorData, EncodeOptions options)
    {
        var parts = EntropyCoded
            ? new List<EncodedPart> { Coded("blocks.ans", blocks, options), Coded("scales.ans", scales, options) }
            : new List<EncodedPart>
            {
                new("blocks", DType.U8, [rows, blocksPerRow, Codec.BytesPerBlock], blocks),
                Codec.ScaleBytesPerBlock == 2
                    ? new("scales", DType.U16, [rows, blocksPerRow], scales)
                    : new("scales", DType.U8, [rows, blocksPerRow * Codec.ScaleBytesPerBlock], scales),
            };
        if (!HasScales) parts.RemoveAt(1); // ggml's formats keep the scale inside the block
        if (tensorData.Length > 0) parts.Add(new("tensor_data", DType.U8, [tensorData.Length], tensorData));
        return parts;
    }

    /// <summary><c>ldlq=1</c> on a weight with a Hessian: LDLQ onto the format as a grid, whose arrays are the
    /// format's own blocks, scales and tensor data. Reports the activation-aware error beside round-to-nearest's
    /// reference, <c>‖(Ŵ − W) H^{1/2}‖ / ‖W H^{1/2}‖</c>.</summary>
    private EncodedTensor EncodeLdlq(TensorView source, int rows, int cols, Hessian hessian, EncodeOptions options,
        CancellationToken cancellationToken)
    {
        var tensor = source.Tensor;
        if (hessian.Size != cols)
            throw new InputException($"{tensor.Name}: the calibration Hessian is {hessian.Size}×{hessian.Size}, the weight has {cols} columns");
        if ((long)rows * cols > Array.MaxLength / 2)
            throw new InputException($"{tensor.Name}: ldlq=1 holds the weight in doubles; [{rows}, {cols}] is too large");
        var weights = new double[(long)rows * cols];
        var chunk = new float[Math.Min(weights.Length, ChunkElements)];
        for (long first = 0; first < weights.Length; first += chunk.Length)
        {
            int count = (int)Math.Min(chunk.Length, weights.Length - first);
            source.ReadFloats(first, chunk.AsSpan(0, count));
            for (int i = 0; i < count; i++)
            {
                if (!float.IsFinite(chunk[i]))
                    throw new NonFiniteValueException(first + i, chunk[i]).In(tensor.Name, option: "",
                        remedy: "ldlq=1 cannot fit non-finite weights; leave this tensor to the plain format with --exclude");
                weights[first + i] = chunk[i];
            }
        }
        var quantized = LowRank.Ldlq.Quantize(weights, rows, cols, hessian, new BlockGrid(Codec), options.Parallelism, cancellationToken,
            actOrder: ActOrder);
        var arrays = quantized.Quantizer.Arrays().ToDictionary(a => a.Role, a => a.Data);
        var delta = new double[weights.Length];
        for (long i = 0; i < delta.Length; i++) delta[i] = quantized.Values[i] - weights[i];
        double error = Math.Sqrt(hessian.WeightedSquaredNorm(delta, rows) / Math.Max(double.Epsilon, hessian.WeightedSquaredNorm(weights, rows)));
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        var parameters = new Dictionary<string, string>
        {
            ["rounding"] = ActOrder ? "ldlq, act-order" : "ldlq",
            ["calibration_tokens"] = hessian.Tokens.ToString(inv),
            ["activation_error"] = error.ToString("R", inv),
        };
        return new EncodedTensor(Parts(rows, Codec.BlocksPerRow(cols), arrays[BlockLayout.Blocks], arrays[BlockLayout.Scales],
            arrays.GetValueOrDefault(BlockLayout.TensorData) ?? [], options), parameters);
    }

    private static EncodedPart Coded(string suffix, byte[] bytes, EncodeOptions options)
    {
        var coded = Lossless.LosslessCodec.Encode(bytes, DType.U8, Lossless.LosslessOptions.Default with
        {
            Parallelism = options.Parallelism,
            MinimumSavings = 0,
        });
        return new EncodedPart(suffix, DType.U8, [coded.Length], coded);
    }

    private delegate void ChunkAction(ReadOnlySpan<float> chunk, long firstRow, int rowCount);

    private static void ForEachChunk(TensorView source, long rows, int cols, int rowsPerChunk, float[] buffer,
        CancellationToken cancellationToken, ChunkAction action)
    {
        for (long first = 0; first < rows; first += rowsPerChunk)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = (int)Math.Min(rowsPerChunk, rows - first);
            var chunk = buffer.AsSpan(0, count * cols);
            source.ReadFloats(first * cols, chunk);
            action(chunk, first, count);
        }
    }

    public ITensorDecoder OpenDecoder(StoredTensor stored) => new Decoder(this, stored);

    private sealed class Decoder : ITensorDecoder
    {
        // Tiles are decoded on the runtime's worker threads, so each call decodes on its own thread only.
        private static readonly CodecOptions SingleThread = new() { Parallelism = Parallelism.SingleThread };

        private readonly IBlockCodec _codec;
        private readonly TensorView? _blocks, _scales;       // plain parts, mapped
        private readonly byte[]? _blockBytes, _scaleBytes;   // entropy-coded parts, expanded once
        private readonly byte[] _tensorData;
        private readonly int _cols, _blocksPerRow;

        public Decoder(BlockTensorCodec owner, StoredTensor stored)
        {
            _codec = owner.Codec;
            Stored = stored;
            _cols = checked((int)stored.Columns);
            _blocksPerRow = _codec.BlocksPerRow(_cols);
            long expectedBlocks = stored.Rows * _blocksPerRow * _codec.BytesPerBlock;
            long expectedScales = stored.Rows * _blocksPerRow * _codec.ScaleBytesPerBlock;
            bool hasScales = owner.HasScales;
            if (owner.EntropyCoded)
            {
                _blockBytes = Expand(stored, "blocks.ans", expectedBlocks);
                _scaleBytes = hasScales ? Expand(stored, "scales.ans", expectedScales) : [];
            }
            else
            {
                var blocks = stored.Part("blocks");
                long scaleLength = hasScales ? stored.Part("scales").ByteLength : 0;
                if (blocks.ByteLength != expectedBlocks || scaleLength != expectedScales)
                    throw new CheckpointFormatException(blocks.FilePath, $"{stored.Name}.blocks", blocks.FileOffset,
                        $"{_codec.Spec} of shape [{string.Join(", ", stored.Shape)}] needs {expectedBlocks} block bytes and {expectedScales} scale bytes, " +
                        $"found {blocks.ByteLength} and {scaleLength}");
            }
            _tensorData = new byte[_codec.TensorDataBytes];
            if (_tensorData.Length > 0)
            {
                var part = stored.Part("tensor_data");
                if (part.ByteLength != _tensorData.Length)
                    throw new CheckpointFormatException(part.FilePath, part.Name, part.FileOffset, $"expected {_tensorData.Length} bytes, found {part.ByteLength}");
                using var view = stored.Map("tensor_data");
                view.Bytes.CopyTo(_tensorData);
                try
                {
                    _codec.Dequantize([], [], _tensorData, 0, _cols, SingleThread, []); // checks the tensor data (NVFP4: a finite scale ≥ 0)
                }
                catch (ArgumentException e)
                {
                    throw new CheckpointFormatException(part.FilePath, part.Name, part.FileOffset, e.Message, e);
                }
            }
            if (!owner.EntropyCoded)
            {
                _blocks = stored.Map("blocks");
                _scales = hasScales ? stored.Map("scales") : null;
                _scaleBytes = hasScales ? null : [];
                // ggml's 4-bit blocks (17/18 bytes) are repacked for products on first use (llama.cpp does the same).
                if (Formats.Ggml.GgmlDot.Repacked.Applies(_codec, _cols) && expectedBlocks <= int.MaxValue)
                {
                    var view = _blocks;
                    long rows = stored.Rows;
                    _repacked = new Lazy<Formats.Ggml.GgmlDot.Repacked?>(
                        () => Formats.Ggml.GgmlDot.Repacked.Create(_codec, view.Slice(0, (int)expectedBlocks), rows, _cols),
                        LazyThreadSafetyMode.ExecutionAndPublication);
                }
            }
        }

        private readonly Lazy<Formats.Ggml.GgmlDot.Repacked?>? _repacked;

        private static byte[] Expand(StoredTensor stored, string suffix, long expected)
        {
            var part = stored.Part(suffix);
            using var view = stored.Map(suffix);
            try
            {
                var info = Lossless.LosslessCodec.ReadInfo(view.Bytes, stored.Name);
                if (info.DecodedLength != expected)
                    throw new CheckpointFormatException(part.FilePath, part.Name, part.FileOffset,
                        $"coded stream holds {info.DecodedLength} bytes, the layout needs {expected}");
                var bytes = new byte[expected];
                Lossless.LosslessCodec.Decode(view.Bytes, bytes, stored.Name);
                return bytes;
            }
            catch (Lossless.LosslessFormatException e)
            {
                throw new CheckpointFormatException(part.FilePath, part.Name, part.FileOffset + e.Offset, e.Message, e);
            }
        }

        public StoredTensor Stored { get; }

        public void ReadRows(long firstRow, int count, Span<float> destination)
        {
            long blockStride = (long)_blocksPerRow * _codec.BytesPerBlock, scaleStride = (long)_blocksPerRow * _codec.ScaleBytesPerBlock;
            int blockLength = checked((int)(count * blockStride)), scaleLength = checked((int)(count * scaleStride));
            _codec.Dequantize(
                _blockBytes is null ? _blocks!.Slice(firstRow * blockStride, blockLength) : _blockBytes.AsSpan(checked((int)(firstRow * blockStride)), blockLength),
                _scaleBytes is null ? _scales!.Slice(firstRow * scaleStride, scaleLength) : _scaleBytes.AsSpan(checked((int)(firstRow * scaleStride)), scaleLength),
                _tensorData, count, _cols, SingleThread, destination[..checked(count * _cols)]);
        }

        public bool TryDotRows(long firstRow, int count, ReadOnlySpan<float> x, Span<float> y)
        {
            if (_repacked?.Value is { } repacked)
            {
                repacked.DotRows(firstRow, count, x, y);
                return true;
            }
            long blockStride = (long)_blocksPerRow * _codec.BytesPerBlock, scaleStride = (long)_blocksPerRow * _codec.ScaleBytesPerBlock;
            int blockLength = checked((int)(count * blockStride)), scaleLength = checked((int)(count * scaleStride));
            return _codec.TryDotRows(
                _blockBytes is null ? _blocks!.Slice(firstRow * blockStride, blockLength) : _blockBytes.AsSpan(checked((int)(firstRow * blockStride)), blockLength),
                _scaleBytes is null ? _scales!.Slice(firstRow * scaleStride, scaleLength) : _scaleBytes.AsSpan(checked((int)(firstRow * scaleStride)), scaleLength),
                _tensorData, count, _cols, x, y);
        }

        public unsafe bool TryStoredRows(long firstRow, int count, out nint address, out nint length)
        {
            long blockStride = (long)_blocksPerRow * _codec.BytesPerBlock;
            (address, length) = _blocks is null ? (0, 0) : ((nint)(_blocks.Address + firstRow * blockStride), (nint)(count * blockStride));
            return _blocks is not null;
        }

        public bool HasDotRowsMany => _codec.HasDotRowsMany(_cols);

        public int MaxDotVectors => _repacked?.Value is null ? _codec.MaxDotVectors(_cols) : Formats.Ggml.GgmlDot.Repacked.MaxDotVectors;

        public bool TryDotRowsMany(long firstRow, int count, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
        {
            if (_repacked?.Value is { } repacked) return repacked.TryDotRowsMany(firstRow, count, vectors, x, y, yStride);
            long blockStride = (long)_blocksPerRow * _codec.BytesPerBlock, scaleStride = (long)_blocksPerRow * _codec.ScaleBytesPerBlock;
            int blockLength = checked((int)(count * blockStride)), scaleLength = checked((int)(count * scaleStride));
            return _codec.TryDotRowsMany(
                _blockBytes is null ? _blocks!.Slice(firstRow * blockStride, blockLength) : _blockBytes.AsSpan(checked((int)(firstRow * blockStride)), blockLength),
                _scaleBytes is null ? _scales!.Slice(firstRow * scaleStride, scaleLength) : _scaleBytes.AsSpan(checked((int)(firstRow * scaleStride)), scaleLength),
                _tensorData, count, _cols, vectors, x, y, yStride);
        }

        public void ReadOriginal(Stream destination) => Codecs.Codec.WriteAsOriginal(this, destination);

        public void Dispose()
        {
            _blocks?.Dispose();
            _scales?.Dispose();
        }
    }
}
