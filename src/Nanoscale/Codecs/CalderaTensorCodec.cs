using System.Diagnostics;
using System.Globalization;
using System.Numerics.Tensors;
using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.LowRank;
using Nanoscale.Tensors;

namespace Nanoscale.Codecs;

/// <summary>
/// <c>caldera:rank=K,q=GRID,lr=GRID[,iters=N,lrsteps=N]</c> in the container (docs/caldera.md): a weight W (m × n) is
/// stored as Q (m × n on the q grid) plus L·R (L m × k, R k × n on the lr grid), fitted to the layer's calibration
/// Hessian from <see cref="EncodeOptions.Calibration"/> (H = I when there is none).
/// Parts: <c>NAME.q.*</c> (Q), <c>NAME.l.*</c> (Lᵀ, k × m), <c>NAME.r.*</c> (R, k × n), each laid out by its grid.
/// Decoding a row range: decode the rows of Q, then add <c>L[rows]·R</c> (L and R are decoded once when the tensor is
/// opened: k·(m + n) floats).
/// </summary>
internal sealed class CalderaTensorCodec(string spec, CalderaOptions options) : ITensorCodec, ICodec
{
    public string Spec { get; } = spec;

    public CalderaOptions Options { get; } = options;

    public bool IsLossless => false;

    /// <summary>The registry row (SPEC §7): <c>caldera</c> with rank, q, lr, iters and lrsteps.</summary>
    public static FormatTraits Traits { get; } = new("caldera", [],
        "CALDERA: W ≈ Q + L·R, Q by LDLQ on a low-bit grid, rank-k factors L, R on another grid, fitted to calibration Hessians",
        double.NaN,
        [
            new FormatOption("rank", "16", [], "k, the rank of L·R (0 = LDLQ alone)"),
            new FormatOption("q", "mxint2", [], $"grid of Q: {ValidGrids}", NestedSpec: true),
            new FormatOption("lr", "mxfp4", [], "grid of L and R (same choices as q)", NestedSpec: true),
            new FormatOption("iters", "20", [], "outer iterations (the best iterate is kept)"),
            new FormatOption("lrsteps", "3", [], "least-squares rounds of each LR step"),
            new FormatOption("had", "0", ["0", "1"], "1: input-side randomized Hadamard (or random orthogonal) transform first"),
            new FormatOption("seed", "1", [], "seed of the transform and of the randomized SVD"),
            new FormatOption("actorder", "0", ["0", "1"], "1: Q's LDLQ in act-order (largest Hessian diagonal first, a block at a time)"),
        ],
        (parsed, canonical) => Create(parsed, canonical));

    private static CalderaTensorCodec Create(FormatSpec parsed, string canonical)
    {
        int Integer(string key, int fallback, int min, int max)
        {
            string? text = parsed[key];
            if (text is null) return fallback;
            if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value) || value < min || value > max)
                throw new FormatSpecException(canonical, $"{key} must be an integer from {min} to {max} (found '{text}')");
            return value;
        }
        QuantGrid Grid(string key, string fallback)
        {
            try { return ParseGrid(parsed.Nested(key) ?? FormatSpec.Parse(fallback)); }
            catch (FormatSpecException e) { throw new FormatSpecException(canonical, $"{key}: {e.Message}"); }
        }
        return new CalderaTensorCodec(canonical, new CalderaOptions
        {
            Rank = Integer("rank", 16, 0, 65536),
            Q = Grid("q", "mxint2"),
            LowRank = Grid("lr", "mxfp4"),
            Iterations = Integer("iters", 20, 1, 1000),
            LowRankRounds = Integer("lrsteps", 3, 0, 100),
            Hadamard = parsed["had"] == "1",
            ActOrder = parsed["actorder"] == "1",
            Seed = Integer("seed", 1, 0, int.MaxValue),
        });
    }

    public EncodedTensor Encode(TensorView source, EncodeOptions options, CancellationToken cancellationToken = default)
    {
        var tensor = source.Tensor;
        if (tensor.Shape.Length != 2 || tensor.Shape[0] > int.MaxValue || tensor.Shape[1] > int.MaxValue || tensor.ElementCount > Array.MaxLength)
            throw new InputException($"{tensor.Name}: caldera applies to 2-D weights, found [{string.Join(", ", tensor.Shape)}]");
        int rows = (int)tensor.Shape[0], cols = (int)tensor.Shape[1];
        if (Options.Rank > Math.Min(rows, cols))
            throw new InvalidOptionException("caldera rank", $"{tensor.Name}: rank {Options.Rank} exceeds min(rows, cols) = {Math.Min(rows, cols)} of [{rows}, {cols}]");
        var clock = Stopwatch.StartNew();
        var weights = source.ToFloatArray();
        for (int i = 0; i < weights.Length; i++)
            if (!float.IsFinite(weights[i]))
                throw new NonFiniteValueException(i, weights[i]).In(tensor.Name, option: "", remedy: "caldera cannot fit non-finite weights");
        var hessian = options.Calibration?.Find(tensor.Name);
        if (hessian is not null && hessian.Size != cols)
            throw new InputException($"{tensor.Name}: the calibration Hessian is {hessian.Size}×{hessian.Size}, the weight has {cols} columns");
        hessian ??= Hessian.Identity(cols);
        var fitted = weights;
        bool fast = Options.Hadamard && FastHadamard.Supports(cols);
        if (fast)
        {
            // W' = W Vᵀ row by row in O(n log n), H' = V H Vᵀ the same way.
            var transform = new FastIncoherence(cols, Options.Seed);
            fitted = (float[])weights.Clone();
            transform.EncodeRows(fitted, rows, options.Parallelism);
            hessian = transform.Transform(hessian, options.Parallelism);
        }
        else if (Options.Hadamard)
        {
            // W' = W Vᵀ, H' = V H Vᵀ: the same activation-aware error, spread-out columns (docs/caldera.md).
            var v = IncoherenceTransform.Create(cols, Options.Seed);
            fitted = Caldera.ToFloatRowMajor(Caldera.FromRowMajor(weights, rows, cols) * v.Transpose());
            hessian = IncoherenceTransform.Transform(hessian, v);
        }
        var result = Caldera.Decompose(fitted, rows, cols, hessian, Options with { Parallelism = options.Parallelism },
            cancellationToken);

        var parts = new List<EncodedPart>(Parts(result.Q, "q"));
        if (result.LTransposed is { } l) parts.AddRange(Parts(l, "l"));
        if (result.R is { } r) parts.AddRange(Parts(r, "r"));
        var inv = CultureInfo.InvariantCulture;
        var parameters = new Dictionary<string, string>
        {
            ["rank"] = Options.Rank.ToString(inv),
            ["calibration_tokens"] = hessian.Tokens.ToString(inv),
            ["activation_error"] = result.RelativeError.ToString("R", inv),
            ["best_iteration"] = result.BestIteration.ToString(inv),
            ["iterations"] = result.IterateErrors.Count.ToString(inv),
        };
        if (Options.Hadamard) parameters["transform_seed"] = Options.Seed.ToString(inv);
        if (fast) parameters["transform"] = IncoherenceTransform.FastKind;
        return new EncodedTensor(parts, parameters);
    }

    /// <summary>A factor's stored arrays as parts <c>NAME.{prefix}.{role}</c>.</summary>
    private static IEnumerable<EncodedPart> Parts(QuantizedMatrix matrix, string prefix) =>
        matrix.Quantizer.Arrays().Select(a => new EncodedPart($"{prefix}.{a.Role}", a.DType, a.Shape, a.Data));

    /// <summary>The grids a spec can name, for error messages.</summary>
    internal const string ValidGrids = "f32, bf16, f16, int2 … int8, or a block format (mxint2 … mxint8, mxfp4, mxfp6, mxfp8, nvfp4, …)";

    /// <summary>
    /// Parses a grid spec (SPEC §11): <c>f32</c>, <c>bf16</c>, <c>f16</c> (<see cref="FloatGrid"/>); <c>int2</c> …
    /// <c>int8</c> (<see cref="UniformIntGrid"/>); or any block format of the table with its options
    /// (<see cref="BlockGrid"/>), e.g. <c>mxfp4:scale=mse,round=away</c>.
    /// </summary>
    /// <exception cref="FormatSpecException">Unknown grid, or a format that is not a block format.</exception>
    internal static QuantGrid ParseGrid(string spec) => ParseGrid(FormatSpec.Parse(spec));

    /// <inheritdoc cref="ParseGrid(string)"/>
    internal static QuantGrid ParseGrid(FormatSpec spec)
    {
        string name = spec.Name;
        if (name.StartsWith("int", StringComparison.Ordinal) && int.TryParse(name.AsSpan(3), NumberStyles.None, CultureInfo.InvariantCulture, out int bits))
            return bits is >= 2 and <= 8 && spec.Options.Count == 0
                ? new UniformIntGrid(bits)
                : throw new FormatSpecException(spec.ToString(), $"int grids have 2 to 8 bits and no options (found '{spec}'); valid grids: {ValidGrids}");
        ITensorCodec codec;
        try { codec = CodecRegistry.Create(spec); }
        catch (FormatSpecException e) { throw new FormatSpecException(spec.ToString(), $"not a grid ({e.Message}); valid grids: {ValidGrids}"); }
        return codec switch
        {
            CastCodec cast when cast == CastCodec.F32 => FloatGrid.F32,
            CastCodec cast when cast == CastCodec.BF16 => FloatGrid.BF16,
            CastCodec cast when cast == CastCodec.F16 => FloatGrid.F16,
            BlockTensorCodec { EntropyCoded: false } block => new BlockGrid(block.Codec),
            _ => throw new FormatSpecException(spec.ToString(), $"'{codec.Spec}' is not a block format, so it cannot be a grid; valid grids: {ValidGrids}"),
        };
    }

    public ITensorDecoder OpenDecoder(StoredTensor stored) => new Decoder(this, stored);

    private sealed class Decoder : ITensorDecoder, IFactoredDecoder
    {
        private readonly IGridReader _q;
        private readonly float[]? _l; // m × k (row-major, transposed back from the stored Lᵀ)
        private readonly float[]? _r; // k × n
        private readonly int _cols, _rank;
        private readonly float[]? _transform; // V, n × n row-major, when the weight was stored transformed
        private readonly FastIncoherence? _fast; // V applied in O(n log n), when the tensor says transform=fast-hadamard

        public Decoder(CalderaTensorCodec owner, StoredTensor stored)
        {
            Stored = stored;
            if (stored.Shape.Length != 2 || stored.Shape[0] > int.MaxValue || stored.Shape[1] > int.MaxValue)
                throw new CheckpointFormatException(stored.ContainerPath, stored.Name, null,
                    $"caldera needs a 2-D tensor, the entry says [{string.Join(", ", stored.Shape)}]");
            int rows = (int)stored.Shape[0];
            _cols = (int)stored.Shape[1];
            _rank = owner.Options.Rank;
            if (stored.Parameters.TryGetValue("rank", out var rankText) && rankText != _rank.ToString(CultureInfo.InvariantCulture))
                throw new CheckpointFormatException(stored.ContainerPath, $"{stored.Name} params.rank", null,
                    $"the entry says rank {rankText}, its spec {owner.Spec} says {_rank}");
            _q = owner.Options.Q.Open(stored.Grid("q"), rows, _cols);
            if (_rank > 0)
            {
                var lt = new float[(long)_rank * rows];
                using (var reader = owner.Options.LowRank.Open(stored.Grid("l"), _rank, rows)) reader.ReadRows(0, _rank, lt);
                _l = new float[lt.Length];
                for (int c = 0; c < _rank; c++)
                    for (int i = 0; i < rows; i++) _l[i * _rank + c] = lt[c * rows + i];
                _r = new float[(long)_rank * _cols];
                using (var reader = owner.Options.LowRank.Open(stored.Grid("r"), _rank, _cols)) reader.ReadRows(0, _rank, _r);
            }
            if (owner.Options.Hadamard && stored.Parameters.TryGetValue("transform", out var kind))
            {
                if (kind != IncoherenceTransform.FastKind || !FastHadamard.Supports(_cols))
                    throw new CheckpointFormatException(stored.ContainerPath, $"{stored.Name} params.transform", null,
                        $"unknown transform \"{kind}\" for width {_cols} (this version knows {IncoherenceTransform.FastKind} for widths m·2^k, m ∈ {{1, 12, 20, 28}})");
                _fast = new FastIncoherence(_cols, owner.Options.Seed);
            }
            else if (owner.Options.Hadamard)
                _transform = Caldera.ToFloatRowMajor(IncoherenceTransform.Create(_cols, owner.Options.Seed));
        }

        public StoredTensor Stored { get; }

        public void ReadRows(long firstRow, int count, Span<float> destination)
        {
            _q.ReadRows(firstRow, count, destination);
            if (_l is not null && _r is not null)
            {
                for (int i = 0; i < count; i++)
                {
                    var row = destination.Slice(i * _cols, _cols);
                    var l = _l.AsSpan((int)((firstRow + i) * _rank), _rank);
                    for (int c = 0; c < _rank; c++)
                        if (l[c] != 0) TensorPrimitives.MultiplyAdd(_r.AsSpan(c * _cols, _cols), l[c], row, row);
                }
            }
            if (_fast is not null)
            {
                var scratch = System.Buffers.ArrayPool<float>.Shared.Rent(_cols);
                for (int i = 0; i < count; i++) _fast.Decode(destination.Slice(i * _cols, _cols), scratch);
                System.Buffers.ArrayPool<float>.Shared.Return(scratch);
                return;
            }
            if (_transform is null) return;
            // ŵ = ŵ' V, row by row (the transform is input-side only, so rows stay independent).
            var transformed = new float[_cols];
            for (int i = 0; i < count; i++)
            {
                var row = destination.Slice(i * _cols, _cols);
                Array.Clear(transformed);
                for (int t = 0; t < _cols; t++)
                    if (row[t] != 0) TensorPrimitives.MultiplyAdd(_transform.AsSpan(t * _cols, _cols), row[t], transformed, transformed);
                transformed.CopyTo(row);
            }
        }

        /// <summary>
        /// The factored product W·x = Q·x' + L·(R·x') with x' = V·x (the incoherence transform applied once to the
        /// activations instead of to every decoded row): Q on its codes when its grid has a step kernel (else a
        /// scratch tile of decoded Q rows), the rank-k path in two thin products. So CALDERA's stored size is also what
        /// a step reads. x' and R·x' are made once per product by each thread (kept for the next tile of the same x).
        /// </summary>
        public bool TryDotRows(long firstRow, int count, ReadOnlySpan<float> x, Span<float> y)
        {
            var prepared = Prepare(x);
            var xq = prepared.Transformed.AsSpan(0, _cols);
            if (!_q.TryDotRows(firstRow, count, xq, y[..count]))
            {
                const int tile = 16;
                var rows = System.Buffers.ArrayPool<float>.Shared.Rent(tile * _cols);
                try
                {
                    for (int i = 0; i < count; i += tile)
                    {
                        int n = Math.Min(tile, count - i);
                        _q.ReadRows(firstRow + i, n, rows.AsSpan(0, n * _cols));
                        for (int r = 0; r < n; r++) y[i + r] = TensorPrimitives.Dot(rows.AsSpan(r * _cols, _cols), xq);
                    }
                }
                finally { System.Buffers.ArrayPool<float>.Shared.Return(rows); }
            }
            AddLowRank(firstRow, count, prepared.LowRank.AsSpan(0, _rank), 1, y, count);
            return true;
        }

        public int Rank => _l is null ? 0 : _rank;

        public void PrepareWindow(ReadOnlySpan<float> x, int tokens, Span<float> transformed, Span<float> lowRank)
        {
            float[]? scratch = _fast is null ? null : System.Buffers.ArrayPool<float>.Shared.Rent(_cols);
            try
            {
                for (int v = 0; v < tokens; v++)
                    TransformAndProject(x.Slice(v * _cols, _cols), transformed.Slice(v * _cols, _cols), lowRank.Slice(v * Rank, Rank), scratch);
            }
            finally
            {
                if (scratch is not null) System.Buffers.ArrayPool<float>.Shared.Return(scratch);
            }
        }

        public void ReadBaseRows(long firstRow, int count, Span<float> destination) => _q.ReadRows(firstRow, count, destination);

        public void AddLowRank(long firstRow, int count, ReadOnlySpan<float> lowRank, int tokens, Span<float> y, int yStride)
        {
            if (_l is null) return;
            for (int v = 0; v < tokens; v++)
            {
                var t = lowRank.Slice(v * _rank, _rank);
                for (int i = 0; i < count; i++) y[v * yStride + i] += TensorPrimitives.Dot(_l.AsSpan((int)((firstRow + i) * _rank), _rank), t);
            }
        }

        private sealed class Prepared
        {
            public Decoder? Owner;
            public float[] Input = [], Transformed = [], LowRank = [], Scratch = [];
        }

        [ThreadStatic] private static Prepared? t_prepared;

        /// <summary>x' = V·x and t = R·x' for <paramref name="x"/>, reused while the same decoder gets the same x.</summary>
        private Prepared Prepare(ReadOnlySpan<float> x)
        {
            var p = t_prepared ??= new Prepared();
            if (ReferenceEquals(p.Owner, this) && p.Input.Length >= _cols && x[.._cols].SequenceEqual(p.Input.AsSpan(0, _cols))) return p;
            if (p.Input.Length < _cols) (p.Input, p.Transformed, p.Scratch) = (new float[_cols], new float[_cols], new float[_cols]);
            if (p.LowRank.Length < _rank) p.LowRank = new float[_rank];
            x[.._cols].CopyTo(p.Input);
            TransformAndProject(x[.._cols], p.Transformed.AsSpan(0, _cols), p.LowRank.AsSpan(0, Rank), p.Scratch);
            p.Owner = this;
            return p;
        }

        /// <summary>x' = V·x into <paramref name="xq"/> and t = R·x' into <paramref name="lowRank"/> (<see cref="Rank"/>
        /// long) for one input; <paramref name="scratch"/> (a width long) serves the fast transform.</summary>
        private void TransformAndProject(ReadOnlySpan<float> x, Span<float> xq, Span<float> lowRank, Span<float> scratch)
        {
            // A row is decoded as ŵ'·V, so w·x = ŵ'·(V x), and V x is x encoded as a row (x·Vᵀ).
            if (_transform is not null)
                for (int t = 0; t < _cols; t++) xq[t] = TensorPrimitives.Dot(_transform.AsSpan(t * _cols, _cols), x);
            else
            {
                x.CopyTo(xq);
                _fast?.Encode(xq, scratch);
            }
            if (_r is not null)
                for (int c = 0; c < lowRank.Length; c++) lowRank[c] = TensorPrimitives.Dot(_r.AsSpan(c * _cols, _cols), xq);
        }

        public void ReadOriginal(Stream destination) => Codec.WriteAsOriginal(this, destination);

        public void Dispose() => _q.Dispose();
    }
}
