using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Formats.Nx;

/// <summary>
/// Fast NxFP kernels over a range of rows: the same candidate search as <see cref="NxfpReference"/> with the bit cast
/// (<see cref="ElementFormat.Encode"/>) and the scale neighbours from the exponent bits of amax/top
/// (<see cref="NxfpBlock.ScaleNeighbours"/>); the vector path (<c>NxfpKernel.Vector256.cs</c>) evaluates each candidate
/// in four 8-lane vectors, packs codes with pext and decodes every width with vector table lookups. All match the
/// reference byte for byte.
/// </summary>
internal static partial class NxfpKernel
{
    private const int B = NxfpCodec.NxBlockSize;

    /// <summary>One NxFP block at a time for <see cref="BlockCodec.QuantizeBlocks"/>: the candidate search, scalar or
    /// in 8-lane vectors, then the codes packed (pext where the machine has it).</summary>
    internal readonly ref struct Quantizer : IBlockQuantizer
    {
        private readonly NxfpCodec _codec;
        private readonly NonFinitePolicy _policy;
        private readonly VectorConfig[]? _encoders; // null: scalar
        private readonly Span<byte> _codes, _candidate; // scratch: one block each
        private readonly Span<float> _squares;

        public Quantizer(NxfpCodec codec, NonFinitePolicy policy, bool vector, Span<byte> codes, Span<byte> candidate, Span<float> squares)
        {
            _codec = codec;
            _policy = policy;
            _encoders = vector ? VectorEncoders(codec) : null;
            _codes = codes;
            _candidate = candidate;
            _squares = squares;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int QuantizeBlock(scoped ReadOnlySpan<float> block, long firstElementIndex, scoped Span<byte> packed)
        {
            bool vector = _encoders is not null;
            uint amaxBits = 0;
            if (vector)
                amaxBits = AbsMaxBits(block);
            else
                foreach (float v in block)
                    amaxBits = Math.Max(amaxBits, BitConverter.SingleToUInt32Bits(v) & 0x7FFF_FFFFu);
            if (amaxBits >= 0x7F80_0000u)
                return NxfpBlock.NonFiniteBlock(_codec, block, _policy, firstElementIndex, _codes, packed);
            if (amaxBits == 0)
            {
                packed.Clear();
                return 0;
            }
            int word = vector
                ? QuantizeBlockVector(_codec, _encoders!, block, BitConverter.UInt32BitsToSingle(amaxBits), _codes)
                : QuantizeBlockScalar(_codec, block, BitConverter.UInt32BitsToSingle(amaxBits), _codes, _candidate, _squares);
            if (vector && Bmi2.X64.IsSupported)
                PackBlock(_codes, _codec.ElementBits, packed);
            else
                BlockPacking.Pack(_codes, _codec.ElementBits, packed);
            return word;
        }
    }

    private static int QuantizeBlockScalar(NxfpCodec codec, ReadOnlySpan<float> v, float amax, Span<byte> codes,
        Span<byte> candidate, Span<float> squares)
    {
        ScaleFormat scale = codec.Scale;
        float bestError = float.PositiveInfinity;
        int bestWord = -1, bestFormat = 0;
        for (int f = 0; f < codec.Formats.Length; f++)
        for (int l = 0; l < codec.LevelCount; l++)
        {
            int k = f * codec.LevelCount + l;
            foreach (float top in codec.Tops(k))
            {
                var (floor, ceil) = NxfpBlock.ScaleNeighbours(scale, amax, top);
                for (int n = 0; n < 2; n++)
                {
                    int sc = n == 0 ? floor : ceil;
                    if (n == 1 && ceil == floor) break;
                    float error = CandidateScalar(codec, f, k, scale.Decode(sc), v, candidate, squares);
                    if (error < bestError)
                    {
                        bestError = error;
                        bestWord = codec.Word(sc, f, l);
                        bestFormat = f;
                        candidate.CopyTo(codes);
                    }
                }
            }
        }
        if (bestWord < 0)
        {
            bestWord = codec.Word(scale.MaxCode, 0, 0);
            CandidateScalar(codec, 0, 0, scale.Decode(scale.MaxCode), v, codes, squares);
        }
        NxfpBlock.AvoidNaNPattern(codec, bestWord, v[0] / scale.Decode(bestWord & ((1 << codec.ScaleBits) - 1)), bestFormat, codes);
        return bestWord;
    }

    private static float CandidateScalar(NxfpCodec codec, int f, int k, float s, ReadOnlySpan<float> v,
        Span<byte> codes, Span<float> squares)
    {
        ElementFormat format = codec.Formats[f];
        float[] table = codec.DecodeTableArray(k);
        ReadOnlySpan<float> grid = format.DecodeTable;
        RoundingMode mode = codec.Rounding;
        bool recycling = codec.Recycling;
        float level = codec.Level(f, k % codec.LevelCount);
        int negativeZero = codec.NegativeZeroCode;
        for (int i = 0; i < B; i++)
        {
            float x = v[i] / s;
            int code = format.Encode(x, mode);
            if (recycling && MathF.Abs(x - level) < MathF.Abs(x - grid[code]))
                code = negativeZero;
            codes[i] = (byte)code;
            float d = v[i] - table[code] * s;
            squares[i] = d * d;
        }
        return NxfpBlock.LaneSum(squares);
    }

    /// <summary>One NxFP block at a time for <see cref="BlockCodec.DequantizeBlocks"/>: the word selects the decode
    /// table (format × recycled level) and the scale; vector table lookups for every width.</summary>
    internal readonly ref struct Dequantizer : IBlockDequantizer
    {
        private readonly NxfpCodec _codec;
        private readonly ReadOnlySpan<float> _scaleTable;
        private readonly int _bits, _bytesPerBlock, _scaleBits, _formatShift, _levelShift, _scaleMask, _formatMask, _levelMask;
        private readonly int _lastFormat, _lastLevel, _levelCount, _nanWord;
        private readonly bool _vector4, _vectorPacked;
        private readonly (Vector256<float> Low, Vector256<float> High)[]? _vectorTables;
        private readonly UnpackControls _unpack;
        private readonly VectorConfig[]? _configs;
        private readonly Span<byte> _codes, _tail; // scratch: one block of codes; a zero-padded copy of a last block

        public Dequantizer(NxfpCodec codec, bool vector, Span<byte> codes, Span<byte> tail)
        {
            _codec = codec;
            _scaleTable = codec.Scale.DecodeTable;
            _bits = codec.ElementBits;
            _bytesPerBlock = codec.BytesPerBlock;
            _scaleBits = codec.ScaleBits;
            _formatShift = codec.ScaleBits;
            _levelShift = codec.ScaleBits + codec.FormatSelectorBits;
            _scaleMask = (1 << codec.ScaleBits) - 1;
            _formatMask = (1 << codec.FormatSelectorBits) - 1;
            _levelMask = (1 << codec.LevelSelectorBits) - 1;
            _lastFormat = codec.Formats.Length - 1;
            _lastLevel = codec.LevelCount - 1;
            _levelCount = codec.LevelCount;
            _nanWord = codec.NaNWord;
            _vector4 = vector && _bits == 4;
            _vectorPacked = vector && _bits != 4;
            _vectorTables = _vector4 ? Vector4BitTables(codec) : null;
            _unpack = _vectorPacked ? UnpackControls.For(_bits) : default;
            _configs = _vectorPacked && _bits is 5 or 6 ? VectorEncoders(codec) : null;
            _codes = codes;
            _tail = tail;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void DequantizeBlock(int word, scoped ReadOnlySpan<byte> blocks, int offset, scoped Span<float> destination)
        {
            float scale = _scaleTable[word & _scaleMask];
            int f = Math.Min((word >> _formatShift) & _formatMask, _lastFormat);
            int l = Math.Min((word >> _levelShift) & _levelMask, _lastLevel);
            int k = f * _levelCount + l;
            ReadOnlySpan<byte> packed = blocks.Slice(offset, _bytesPerBlock);
            if (word == _nanWord)
            {
                BlockPacking.Unpack(packed, _bits, _codes);
                if (NxfpBlock.IsNaNBlock(_codec, word, _codes))
                    scale = float.NaN;
            }
            if (_vector4)
                Packed4Vector.Dequantize32(_vectorTables![k].Low, _vectorTables[k].High, packed, scale, destination);
            else if (_vectorPacked)
            {
                // The vector unpack reads 16 bytes at the start of each group of 8 codes: past the end of the block,
                // so the last blocks of the buffer go through a zero-padded copy.
                ReadOnlySpan<byte> window = offset + UnpackControls.ReadBytes(_bits) <= blocks.Length ? blocks[offset..] : _tail;
                if (window == _tail)
                    packed.CopyTo(_tail);
                DequantizeBlockVector(_unpack, _bits, _codec.DecodeTableArray(k), _configs?[k].TableParts, window, scale, destination);
            }
            else
            {
                ReadOnlySpan<float> table = _codec.DecodeTableArray(k);
                if (_bits == 8)
                    packed.CopyTo(_codes);
                else
                    BlockPacking.Unpack(packed, _bits, _codes);
                for (int i = 0; i < B; i++)
                    destination[i] = table[_codes[i]] * scale;
            }
        }
    }
}
