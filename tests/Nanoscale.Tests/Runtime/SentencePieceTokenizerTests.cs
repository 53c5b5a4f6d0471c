using System.Text;
using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>
/// stories260K's tok512.bin was exported from a SentencePiece BPE model. Rebuilding an equivalent <c>.model</c>
/// protobuf from it lets the Microsoft.ML.Tokenizers-backed reader be checked against our llama2.c tokenizer.
/// </summary>
public class SentencePieceTokenizerTests
{
    /// <summary>Writes a SentencePiece ModelProto (pieces, BPE trainer spec with byte fallback, identity normalizer).</summary>
    internal static string WriteModel(string path)
    {
        var llama = Llama2cTokenizer.Load(SharedData.Tok512);
        var model = new ProtoWriter();
        for (int id = 0; id < llama.VocabSize; id++)
        {
            var text = Encoding.UTF8.GetString(llama.Piece(id));
            (string piece, int type) = id switch
            {
                0 => ("<unk>", 2),
                1 => ("<s>", 3),
                2 => ("</s>", 3),
                < 259 => ($"<0x{id - 3:X2}>", 6),
                _ => (text.Replace(' ', '\u2581'), 1),
            };
            var entry = new ProtoWriter().String(1, piece).Float(2, llama.Score(id)).Varint(3, type);
            model.Message(1, entry);
        }
        model.Message(2, new ProtoWriter().Varint(3, 2).Varint(4, llama.VocabSize).Varint(35, 1)
            .Varint(40, 0).Varint(41, 1).Varint(42, 2).Varint(43, unchecked((ulong)-1L)));
        model.Message(3, new ProtoWriter().String(1, "identity").Varint(3, 1).Varint(4, 0).Varint(5, 1));
        File.WriteAllBytes(path, model.ToArray());
        return path;
    }

    [Fact]
    public void MatchesTheLlama2cTokenizerOnRealText()
    {
        using var dir = new TempDir();
        var sentencePiece = SentencePieceModelTokenizer.Load(WriteModel(dir.File("tok512.model")));
        var llama = Llama2cTokenizer.Load(SharedData.Tok512);
        Assert.Equal(512, sentencePiece.VocabSize);
        Assert.Equal(1, sentencePiece.BosId);
        Assert.Equal(2, sentencePiece.EosId);

        var documents = File.ReadAllText(SharedData.TinyStoriesText).Split("<|endoftext|>").Select(d => d.Trim()).Where(d => d.Length > 0).ToList();
        Assert.Equal(5, documents.Count);
        foreach (var text in documents.Append("Hello, world! Ünïcödé and\ttabs\nnewlines 123"))
        {
            var expected = llama.Encode(text, addBos: true);
            Assert.Equal(expected, sentencePiece.Encode(text, addBos: true));
            Assert.Equal(llama.Decode(expected), sentencePiece.Decode(expected));
        }
    }

    [Fact]
    public void LoaderPicksTheReaderByExtensionAndRefusesGarbage()
    {
        using var dir = new TempDir();
        var model = WriteModel(dir.File("tokenizer.model"));
        Assert.IsType<SentencePieceModelTokenizer>(TokenizerLoader.Open(model));
        var bad = dir.File("bad.model");
        File.WriteAllBytes(bad, [0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 1, 2, 3]);
        var error = Assert.Throws<CheckpointFormatException>(() => TokenizerLoader.Open(bad));
        Assert.Contains(bad, error.Message);
    }

    /// <summary>Just enough protobuf encoding for the fixture: varints, length-delimited fields, fixed32 floats.</summary>
    private sealed class ProtoWriter
    {
        private readonly MemoryStream _stream = new();

        public ProtoWriter Varint(int field, long value) => Varint(field, unchecked((ulong)value));

        public ProtoWriter Varint(int field, ulong value)
        {
            WriteRaw((ulong)field << 3);
            WriteRaw(value);
            return this;
        }

        public ProtoWriter String(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));

        public ProtoWriter Message(int field, ProtoWriter message) => Bytes(field, message.ToArray());

        public ProtoWriter Float(int field, float value)
        {
            WriteRaw(((ulong)field << 3) | 5);
            _stream.Write(BitConverter.GetBytes(value));
            return this;
        }

        public byte[] ToArray() => _stream.ToArray();

        private ProtoWriter Bytes(int field, byte[] bytes)
        {
            WriteRaw(((ulong)field << 3) | 2);
            WriteRaw((ulong)bytes.Length);
            _stream.Write(bytes);
            return this;
        }

        private void WriteRaw(ulong value)
        {
            do
            {
                byte b = (byte)(value & 0x7F);
                value >>= 7;
                _stream.WriteByte(value != 0 ? (byte)(b | 0x80) : b);
            } while (value != 0);
        }
    }
}
