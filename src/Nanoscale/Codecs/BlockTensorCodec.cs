using Nanoscale.Formats;
using Nanoscale.IO;
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
internal sealed class BlockTensorCodec(IBlockCodec codec, bool entropyCoded = false) : ITensorCodec
{

    /// <summary>Elements converted to float32 and quantized per step: bounds the working memory.</summary>
    private const int ChunkElements = 1 << 22;

    public IBlockCodec Codec { get; } = codec;

    public bool EntropyCoded { get; } = entropyCoded;

    /// <summary>The block codec's spec, with <c>entropy=rans</c> last when the parts are entropy-coded.</summary>
    public string Spec => EntropyCoded ? FormatSpec.Parse(Codec.Spec).With("entropy", "rans").ToString() : Codec.Spec;

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
            return new EncodedTensor(parts);
        }
        catch (NonFiniteValueException e)
        {
            throw e.In(tensor.Name, option: EncodeOptions.AllowNonFiniteName,
                remedy: $"use {EncodeOptions.AllowNonFiniteName} to store such blocks as NaN");
        }
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
            }
        }

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
            long blockStride = (long)_blocksPerRow * _codec.BytesPerBlock, scaleStride = (long)_blocksPerRow * _codec.ScaleBytesPerBlock;
            int blockLength = checked((int)(count * blockStride)), scaleLength = checked((int)(count * scaleStride));
            return _codec.TryDotRows(
                _blockBytes is null ? _blocks!.Slice(firstRow * blockStride, blockLength) : _blockBytes.AsSpan(checked((int)(firstRow * blockStride)), blockLength),
                _scaleBytes is null ? _scales!.Slice(firstRow * scaleStride, scaleLength) : _scaleBytes.AsSpan(checked((int)(firstRow * scaleStride)), scaleLength),
                _tensorData, count, _cols, x, y);
        }

        public bool HasDotRowsMany => _codec.HasDotRowsMany(_cols);

        public bool TryDotRowsMany(long firstRow, int count, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
        {
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
