namespace Nanoscale.Pipeline.Jinja;

/// <summary>
/// Jinja's statements and expressions, as far as chat templates use them: <c>for</c> (with an <c>if</c> filter,
/// <c>else</c>, tuple targets, <c>loop.*</c>), <c>if</c>/<c>elif</c>/<c>else</c>, <c>set</c> (names, tuples,
/// <c>namespace</c> attributes, blocks), <c>macro</c> and <c>call</c> blocks (the body as the macro's <c>caller</c>),
/// <c>break</c>/<c>continue</c>, <c>raw</c>, transformers'
/// <c>generation</c>; expressions with Jinja's precedence (<c>or</c>, <c>and</c>, <c>not</c>, comparisons and
/// <c>in</c>, <c>+ -</c>, <c>~</c>, <c>* / // %</c>, <c>**</c>, unary signs, then attributes, subscripts, slices,
/// calls, filters and <c>is</c> tests), conditional expressions, and list, tuple and dict literals. Anything else is
/// a <see cref="JinjaException"/> naming where it is.
/// </summary>
internal sealed class JinjaParser
{
    /// <summary>Nesting deeper than this (brackets, blocks) is refused rather than risking the stack.</summary>
    private const int MaxDepth = 200;

    private readonly string _source;
    private readonly List<Token> _tokens;
    private int _at;
    private int _depth;
    private int _loops; // for-loops around the statement being parsed (break and continue need one)

    private JinjaParser(string source, List<Token> tokens) => (_source, _tokens) = (source, tokens);

    public static (string Source, IReadOnlyList<Node> Body) Parse(string template)
    {
        var (source, tokens) = JinjaLexer.Tokenize(template);
        var parser = new JinjaParser(source, tokens);
        var (body, _) = parser.Body([]);
        return (source, body);
    }

    private Token Current => _tokens[_at];

    private JinjaException Error(string message, int? offset = null) => JinjaLexer.Error(_source, offset ?? Current.Offset, message);

    private Token Next() => _tokens[_at++];

    private bool IsOperator(string op) => Current.Kind == TokenKind.Operator && Current.Value == op;

    private bool IsName(string name) => Current.Kind == TokenKind.Name && Current.Value == name;

    private bool SkipOperator(string op)
    {
        if (!IsOperator(op)) return false;
        _at++;
        return true;
    }

    private bool SkipName(string name)
    {
        if (!IsName(name)) return false;
        _at++;
        return true;
    }

    private void Expect(string op)
    {
        if (!SkipOperator(op)) throw Error($"'{op}' expected, found {Describe(Current)}");
    }

    private void ExpectBlockClose()
    {
        if (Current.Kind != TokenKind.BlockClose) throw Error($"'%}}' expected, found {Describe(Current)}");
        _at++;
    }

    private string ExpectName()
    {
        if (Current.Kind != TokenKind.Name) throw Error($"a name expected, found {Describe(Current)}");
        return Next().Value;
    }

    private static string Describe(Token t) => t.Kind switch
    {
        TokenKind.End => "the end of the template",
        TokenKind.BlockClose => "'%}'",
        TokenKind.VariableClose => "'}}'",
        TokenKind.String => "a string",
        TokenKind.Text => "text",
        _ => $"'{t.Value}'",
    };

    private void Enter()
    {
        if (++_depth > MaxDepth) throw Error($"the template nests deeper than {MaxDepth} levels");
    }

    /// <summary>Nodes up to a block tag whose keyword is one of <paramref name="ends"/> (consumed, its name returned) or
    /// the end of the template (only when <paramref name="ends"/> is empty).</summary>
    private (List<Node> Nodes, string End) Body(string[] ends)
    {
        Enter();
        var nodes = new List<Node>();
        while (true)
        {
            var token = Current;
            switch (token.Kind)
            {
                case TokenKind.Text:
                    _at++;
                    nodes.Add(new TextNode(token.Value, token.Offset));
                    break;
                case TokenKind.VariableOpen:
                    _at++;
                    var value = Expression();
                    if (Current.Kind != TokenKind.VariableClose) throw Error($"'}}}}' expected, found {Describe(Current)}");
                    _at++;
                    nodes.Add(new OutputNode(value, token.Offset));
                    break;
                case TokenKind.BlockOpen:
                    _at++;
                    var keywordToken = Current;
                    var keyword = ExpectName();
                    if (ends.Contains(keyword))
                    {
                        _depth--;
                        return (nodes, keyword);
                    }
                    nodes.Add(Statement(keyword, keywordToken.Offset));
                    break;
                case TokenKind.End:
                    if (ends.Length > 0) throw Error($"'{{% {ends[^1]} %}}' expected before the end of the template");
                    _depth--;
                    return (nodes, "");
                default:
                    throw Error($"unexpected {Describe(token)}");
            }
        }
    }

    private Node Statement(string keyword, int offset)
    {
        switch (keyword)
        {
            case "for": return For(offset);
            case "if": return If(offset);
            case "set": return Set(offset);
            case "macro": return Macro(offset);
            case "call": return CallBlock(offset);
            case "break" or "continue":
                if (_loops == 0) throw Error($"'{keyword}' outside a for loop", offset);
                ExpectBlockClose();
                return keyword == "break" ? new BreakNode(offset) : new ContinueNode(offset);
            case "generation":
                ExpectBlockClose();
                var (body, _) = Body(["endgeneration"]);
                ExpectBlockClose();
                return new BlockNode(body, offset);
            default:
                throw Error($"'{keyword}' is not a statement this template engine knows", offset);
        }
    }

    private ForNode For(int offset)
    {
        var targets = new List<string> { ExpectName() };
        while (SkipOperator(",")) targets.Add(ExpectName());
        if (!SkipName("in")) throw Error($"'in' expected, found {Describe(Current)}");
        var iterable = Or(allowConditional: false);
        Expr? filter = null;
        if (SkipName("if")) filter = Or(allowConditional: false);
        bool recursive = SkipName("recursive");
        ExpectBlockClose();
        _loops++;
        var (body, end) = Body(["else", "endfor"]);
        _loops--;
        List<Node> otherwise = [];
        if (end == "else")
        {
            ExpectBlockClose();
            (otherwise, _) = Body(["endfor"]);
        }
        ExpectBlockClose();
        return new ForNode(targets, iterable, filter, body, otherwise, offset, recursive);
    }

    private IfNode If(int offset)
    {
        var branches = new List<(Expr, IReadOnlyList<Node>)>();
        var test = Expression();
        ExpectBlockClose();
        while (true)
        {
            var (body, end) = Body(["elif", "else", "endif"]);
            branches.Add((test, body));
            if (end == "elif")
            {
                test = Expression();
                ExpectBlockClose();
                continue;
            }
            List<Node> otherwise = [];
            if (end == "else")
            {
                ExpectBlockClose();
                (otherwise, _) = Body(["endif"]);
            }
            ExpectBlockClose();
            return new IfNode(branches, otherwise, offset);
        }
    }

    private Node Set(int offset)
    {
        var first = ExpectName();
        if (SkipOperator("."))
        {
            var attribute = ExpectName();
            Expect("=");
            var value = Expression();
            ExpectBlockClose();
            return new SetNode(first, [attribute], value, offset);
        }
        var targets = new List<string> { first };
        while (SkipOperator(",")) targets.Add(ExpectName());
        if (Current.Kind == TokenKind.BlockClose && targets.Count == 1)
        {
            _at++;
            var (body, _) = Body(["endset"]);
            ExpectBlockClose();
            return new SetBlockNode(first, body, offset);
        }
        Expect("=");
        var expression = TupleOrExpression();
        ExpectBlockClose();
        return new SetNode(null, targets, expression, offset);
    }

    private MacroNode Macro(int offset)
    {
        var name = ExpectName();
        var (parameters, defaults) = Parameters();
        return new MacroNode(name, parameters, defaults, CallableBody("endmacro"), offset);
    }

    /// <summary>The body of a macro or call block up to <paramref name="end"/>, after the opening tag's <c>%}</c>: a
    /// body of its own, where <c>break</c> and <c>continue</c> of an enclosing loop do not reach.</summary>
    private List<Node> CallableBody(string end)
    {
        ExpectBlockClose();
        int loops = _loops;
        _loops = 0;
        var (body, _) = Body([end]);
        _loops = loops;
        ExpectBlockClose();
        return body;
    }

    /// <summary>A macro's or a call block's parameters: <c>(a, b=default, …)</c>.</summary>
    private (List<string> Names, List<Expr?> Defaults) Parameters()
    {
        var parameters = new List<string>();
        var defaults = new List<Expr?>();
        Expect("(");
        while (!IsOperator(")"))
        {
            parameters.Add(ExpectName());
            defaults.Add(SkipOperator("=") ? Expression() : null);
            if (!SkipOperator(",")) break;
        }
        Expect(")");
        return (parameters, defaults);
    }

    /// <summary><c>{% call [(params)] macro(args) %}…{% endcall %}</c>.</summary>
    private CallBlockNode CallBlock(int offset)
    {
        var (parameters, defaults) = IsOperator("(") ? Parameters() : ([], []);
        if (Expression() is not CallExpr call) throw Error("'call' needs a macro call, such as {% call m(x) %}", offset);
        return new CallBlockNode(parameters, defaults, call, CallableBody("endcall"), offset);
    }

    /// <summary><c>a, b</c> (a tuple, as in <c>set x = 1, 2</c>) or one expression.</summary>
    private Expr TupleOrExpression()
    {
        int offset = Current.Offset;
        var first = Expression();
        if (!IsOperator(",")) return first;
        var items = new List<Expr> { first };
        while (SkipOperator(","))
        {
            if (Current.Kind is TokenKind.BlockClose or TokenKind.VariableClose) break;
            items.Add(Expression());
        }
        return new ListExpr(items, offset, Tuple: true);
    }

    public Expr Expression() => Or(allowConditional: true);

    private Expr Or(bool allowConditional)
    {
        Enter();
        int offset = Current.Offset;
        var left = And();
        while (IsName("or"))
        {
            _at++;
            left = new BinaryExpr("or", left, And(), offset);
        }
        if (allowConditional && IsName("if"))
        {
            // x if test else y (the else is optional: undefined without it)
            _at++;
            var test = Or(allowConditional: false);
            Expr? otherwise = SkipName("else") ? Or(allowConditional: true) : null;
            left = new ConditionalExpr(test, left, otherwise, offset);
        }
        _depth--;
        return left;
    }

    private Expr And()
    {
        int offset = Current.Offset;
        var left = Not();
        while (SkipName("and")) left = new BinaryExpr("and", left, Not(), offset);
        return left;
    }

    private Expr Not()
    {
        int offset = Current.Offset;
        if (SkipName("not"))
        {
            Enter();
            var operand = Not();
            _depth--;
            return new UnaryExpr("not", operand, offset);
        }
        return Compare();
    }

    private Expr Compare()
    {
        int offset = Current.Offset;
        var first = Sum();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            string? op = Current.Kind == TokenKind.Operator && Current.Value is "==" or "!=" or "<" or ">" or "<=" or ">=" ? Current.Value : null;
            if (op is not null) _at++;
            else if (IsName("in")) { _at++; op = "in"; }
            else if (IsName("not") && _tokens[_at + 1].Kind == TokenKind.Name && _tokens[_at + 1].Value == "in") { _at += 2; op = "not in"; }
            else break;
            rest.Add((op, Sum()));
        }
        return rest.Count == 0 ? first : new CompareExpr(first, rest, offset);
    }

    private Expr Sum()
    {
        int offset = Current.Offset;
        var left = Concat();
        while (Current.Kind == TokenKind.Operator && Current.Value is "+" or "-")
            left = new BinaryExpr(Next().Value, left, Concat(), offset);
        return left;
    }

    private Expr Concat()
    {
        int offset = Current.Offset;
        var left = Product();
        while (SkipOperator("~")) left = new BinaryExpr("~", left, Product(), offset);
        return left;
    }

    private Expr Product()
    {
        int offset = Current.Offset;
        var left = Power();
        while (Current.Kind == TokenKind.Operator && Current.Value is "*" or "/" or "//" or "%")
            left = new BinaryExpr(Next().Value, left, Power(), offset);
        return left;
    }

    private Expr Power()
    {
        int offset = Current.Offset;
        var left = Unary(withFilters: true);
        while (SkipOperator("**")) left = new BinaryExpr("**", left, Unary(withFilters: true), offset);
        return left;
    }

    private Expr Unary(bool withFilters)
    {
        Enter();
        int offset = Current.Offset;
        Expr node;
        if (Current.Kind == TokenKind.Operator && Current.Value is "-" or "+")
            node = new UnaryExpr(Next().Value, Unary(withFilters: false), offset);
        else node = Primary();
        node = Postfix(node);
        if (withFilters) node = FiltersAndTests(node);
        _depth--;
        return node;
    }

    private Expr Primary()
    {
        var token = Next();
        switch (token.Kind)
        {
            case TokenKind.Name:
                return token.Value switch
                {
                    "true" or "True" => new LiteralExpr(true, token.Offset),
                    "false" or "False" => new LiteralExpr(false, token.Offset),
                    "none" or "None" => new LiteralExpr(null, token.Offset),
                    _ => new NameExpr(token.Value, token.Offset),
                };
            case TokenKind.String:
                var text = token.Value;
                while (Current.Kind == TokenKind.String) text += Next().Value; // 'a' 'b' is 'ab'
                return new LiteralExpr(text, token.Offset);
            case TokenKind.Integer:
                return new LiteralExpr(token.Integer, token.Offset);
            case TokenKind.Float:
                return new LiteralExpr(token.Float, token.Offset);
            case TokenKind.Operator when token.Value == "(":
            {
                if (SkipOperator(")")) return new ListExpr([], token.Offset, Tuple: true);
                var first = Expression();
                if (SkipOperator(")")) return first;
                var items = new List<Expr> { first };
                while (SkipOperator(",") && !IsOperator(")")) items.Add(Expression());
                Expect(")");
                return new ListExpr(items, token.Offset, Tuple: true);
            }
            case TokenKind.Operator when token.Value == "[":
            {
                var items = new List<Expr>();
                while (!IsOperator("]"))
                {
                    items.Add(Expression());
                    if (!SkipOperator(",")) break;
                }
                Expect("]");
                return new ListExpr(items, token.Offset);
            }
            case TokenKind.Operator when token.Value == "{":
            {
                var items = new List<(Expr, Expr)>();
                while (!IsOperator("}"))
                {
                    var key = Expression();
                    Expect(":");
                    items.Add((key, Expression()));
                    if (!SkipOperator(",")) break;
                }
                Expect("}");
                return new DictExpr(items, token.Offset);
            }
            default:
                throw Error($"unexpected {Describe(token)}", token.Offset);
        }
    }

    private Expr Postfix(Expr node)
    {
        while (true)
        {
            int offset = Current.Offset;
            if (SkipOperator("."))
            {
                if (Current.Kind == TokenKind.Integer) node = new ItemExpr(node, new LiteralExpr(Next().Integer, offset), offset);
                else node = new AttributeExpr(node, ExpectName(), offset);
            }
            else if (SkipOperator("[")) node = Subscript(node, offset);
            else if (IsOperator("(")) node = Call(node);
            else return node;
        }
    }

    private Expr Subscript(Expr target, int offset)
    {
        Expr? start = null, stop = null, step = null;
        if (!IsOperator(":")) start = Expression();
        if (!SkipOperator(":"))
        {
            if (start is null) throw Error("an index expected");
            Expect("]");
            return new ItemExpr(target, start, offset);
        }
        if (!IsOperator(":") && !IsOperator("]")) stop = Expression();
        if (SkipOperator(":") && !IsOperator("]")) step = Expression();
        Expect("]");
        return new SliceExpr(target, start, stop, step, offset);
    }

    private CallExpr Call(Expr callee)
    {
        int offset = Current.Offset;
        var (arguments, named) = Arguments();
        return new CallExpr(callee, arguments, named, offset);
    }

    private (List<Expr>, List<(string, Expr)>) Arguments()
    {
        Expect("(");
        var arguments = new List<Expr>();
        var named = new List<(string, Expr)>();
        while (!IsOperator(")"))
        {
            if (Current.Kind == TokenKind.Name && _tokens[_at + 1] is { Kind: TokenKind.Operator, Value: "=" })
            {
                var name = Next().Value;
                _at++;
                named.Add((name, Expression()));
            }
            else if (named.Count > 0) throw Error("a positional argument after a named one");
            else arguments.Add(Expression());
            if (!SkipOperator(",")) break;
        }
        Expect(")");
        return (arguments, named);
    }

    private Expr FiltersAndTests(Expr node)
    {
        while (true)
        {
            int offset = Current.Offset;
            if (SkipOperator("|"))
            {
                var name = ExpectName();
                while (SkipOperator(".")) name += "." + ExpectName();
                var (arguments, named) = IsOperator("(") ? Arguments() : ([], []);
                node = new FilterExpr(node, name, arguments, named, offset);
            }
            else if (SkipName("is"))
            {
                bool negated = SkipName("not");
                var name = Current.Kind == TokenKind.Name ? Next().Value
                    : Current.Kind == TokenKind.Operator && Current.Value is "==" or "!=" or "<" or ">" or "<=" or ">=" ? Next().Value
                    : throw Error($"a test name expected after 'is', found {Describe(Current)}");
                name = name switch { "true" or "True" => "true", "false" or "False" => "false", "none" or "None" => "none", _ => name };
                // Jinja's rule: a parenthesised list, or one argument when a name (but else, or, and), a literal, a list or a
                // dict follows (so `x is divisibleby 3` takes 3, and `x is defined if y` is an error, as in Jinja).
                List<Expr> arguments = [];
                if (IsOperator("(")) (arguments, _) = Arguments();
                else if (Current.Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float || IsOperator("[") || IsOperator("{")
                         || (Current.Kind == TokenKind.Name && Current.Value is not ("and" or "or" or "else")))
                {
                    if (IsName("is")) throw Error("tests cannot be chained with 'is'");
                    Enter();
                    arguments = [Postfix(Primary())];
                    _depth--;
                }
                node = new TestExpr(node, name, arguments, negated, offset);
            }
            else if (IsOperator("(")) node = Call(node);
            else return node;
        }
    }
}
