// Package directorytest writes synthetic extracts of the public RPPS
// directory in the published format: the activity file's 56 columns in their
// published order (ActivityHeader), '|'-separated, every line ending with
// '|', one line per practitioner × place of activity, practitioners sorted by
// idNat. The values are made up (names, sites, numbers), with the shapes of
// the real ones: Luhn-valid RPPS numbers, ADELI numbers, accented names and
// towns, Corsican and overseas postal codes, an empty department column on a
// third of the lines. Used by the benchmarks, by `go run
// ./directory/internal/gen`, and by the tests of any package that needs a
// directory to import.
package directorytest

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
)

// ActivityHeader is the header of PS_LibreAcces_Personne_activite_<date>.txt:
// the 56 published columns, in the published order.
var ActivityHeader = []string{
	"Type d'identifiant PP", "Identifiant PP", "Identification nationale PP",
	"Code civilité d'exercice", "Libellé civilité d'exercice", "Code civilité", "Libellé civilité",
	"Nom d'exercice", "Prénom d'exercice",
	"Code profession", "Libellé profession",
	"Code catégorie professionnelle", "Libellé catégorie professionnelle",
	"Code type savoir-faire", "Libellé type savoir-faire", "Code savoir-faire", "Libellé savoir-faire",
	"Code mode exercice", "Libellé mode exercice",
	"Numéro SIRET site", "Numéro SIREN site", "Numéro FINESS site", "Numéro FINESS établissement juridique",
	"Identifiant technique de la structure", "Raison sociale site", "Enseigne commerciale site",
	"Complément destinataire (coord. structure)", "Complément point géographique (coord. structure)",
	"Numéro Voie (coord. structure)", "Indice répétition voie (coord. structure)",
	"Code type de voie (coord. structure)", "Libellé type de voie (coord. structure)",
	"Libellé Voie (coord. structure)", "Mention distribution (coord. structure)",
	"Bureau cedex (coord. structure)", "Code postal (coord. structure)",
	"Code commune (coord. structure)", "Libellé commune (coord. structure)",
	"Code pays (coord. structure)", "Libellé pays (coord. structure)",
	"Téléphone (coord. structure)", "Téléphone 2 (coord. structure)", "Télécopie (coord. structure)",
	"Adresse e-mail (coord. structure)",
	"Code Département (structure)", "Libellé Département (structure)",
	"Ancien identifiant de la structure", "Autorité d'enregistrement",
	"Code secteur d'activité", "Libellé secteur d'activité",
	"Code section tableau pharmaciens", "Libellé section tableau pharmaciens",
	"Code rôle", "Libellé rôle", "Code genre activité", "Libellé genre activité",
}

// SavoirFaireHeader is the header of PS_LibreAcces_SavoirFaire_<date>.txt
// (13 columns).
var SavoirFaireHeader = []string{
	"Type d'identifiant PP", "Identifiant PP", "Identification nationale PP",
	"Nom d'exercice", "Prénom d'exercice",
	"Code profession", "Libellé profession",
	"Code catégorie professionnelle", "Libellé catégorie professionnelle",
	"Code type savoir-faire", "Libellé type savoir-faire", "Code savoir-faire", "Libellé savoir-faire",
}

// Line joins values into one published line: each value followed by '|'.
func Line(values []string) string {
	var b strings.Builder
	for _, v := range values {
		b.WriteString(v)
		b.WriteByte('|')
	}
	return b.String()
}

// RPPS returns the idNat of RPPS number base (10 digits) with its Luhn check
// digit: "8" + base + check.
func RPPS(base int64) string {
	s := fmt.Sprintf("%010d", base)
	return "8" + s + strconv.Itoa(luhnCheck(s))
}

// ADELI returns the idNat of a 9-digit ADELI number: "0" + number.
func ADELI(n int64) string { return fmt.Sprintf("0%09d", n) }

// luhnCheck is the digit that makes digits+check pass the Luhn check.
func luhnCheck(digits string) int {
	sum := 0
	double := true // the check digit is not doubled; its left neighbour is
	for i := len(digits) - 1; i >= 0; i-- {
		d := int(digits[i] - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return (10 - sum%10) % 10
}

// Options of an extract.
type Options struct {
	Lines       int    // data lines of the activity file (header excluded)
	Seed        uint64 // same seed, same extract
	Windows1252 bool   // encode as Windows-1252 instead of UTF-8
	CRLF        bool   // end lines with \r\n instead of \n
	// SavoirFaire, when not nil, receives the savoir-faire file of the same
	// practitioners: one or two extra specialties for one in five.
	SavoirFaire io.Writer
}

// Stats of a written extract.
type Stats struct {
	Lines         int // activity lines written
	Practitioners int // distinct idNats
	SavoirFaire   int // savoir-faire lines written
}

type code struct{ code, label string }

var (
	civilities = []code{{"DR", "Docteur"}, {"MME", "Madame"}, {"M", "Monsieur"}, {"PR", "Professeur"}}
	families   = []string{"MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD", "PETIT", "DURAND",
		"LEROY", "MOREAU", "LEFÈVRE", "GARÇON", "MÉNARD", "NOËL", "CHÂTELAIN", "BÉRANGER", "DUPRÉ",
		"FRANÇOIS", "LEMAÎTRE", "DE LA FONTAINE-SAINT-ÉLOI", "N'DIAYE", "O'NEILL", "BENOÎT", "HÉBERT"}
	givens = []string{"Jean", "Marie", "Hélène", "Éric", "Françoise", "Anaïs", "Jérôme", "Chloé", "Noémie",
		"Loïc", "Gaëlle", "Stéphane", "Zoé", "Benoît", "Agnès", "Thierry", "Cécile", "Jean-François",
		"Marie-Hélène", "Rémi"}
	professions = []struct {
		code
		specialties []code
		weight      int
	}{
		{code{"10", "Médecin"}, []code{{"SM54", "Médecine Générale (SM)"}, {"SM26", "Qualifié en Médecine Générale (SM)"},
			{"SM04", "Cardiologie et maladies vasculaires (SM)"}, {"SM32", "Neurologie (SM)"}, {"SM53", "Spécialiste en Médecine Générale (SM)"},
			{"SM15", "Dermatologie et vénéréologie (SM)"}, {"SM40", "Pédiatrie (SM)"}, {"SM02", "Anesthésie-réanimation (SM)"}}, 35},
		{code{"21", "Pharmacien"}, []code{{"", ""}}, 12},
		{code{"40", "Chirurgien-Dentiste"}, []code{{"", ""}, {"SCD01", "Orthopédie dento-faciale (SCD)"}}, 8},
		{code{"50", "Sage-Femme"}, []code{{"", ""}}, 4},
		{code{"60", "Infirmier"}, []code{{"", ""}}, 25},
		{code{"70", "Masseur-Kinésithérapeute"}, []code{{"", ""}}, 10},
		{code{"80", "Pédicure-Podologue"}, []code{{"", ""}}, 2},
		{code{"91", "Orthophoniste"}, []code{{"", ""}}, 4},
	}
	categories = []code{{"C", "Civil"}, {"C", "Civil"}, {"C", "Civil"}, {"C", "Civil"}, {"M", "Militaire"}, {"E", "Etudiant"}}
	modes      = []code{{"L", "Libéral, indépendant, artisan, commerçant"}, {"S", "Salarié"}, {"S", "Salarié"}, {"B", "Bénévole"}}
	sectors    = []code{{"SA07", "Cabinet individuel"}, {"SA08", "Cabinet de groupe"}, {"SA01", "Etablissement public de santé"},
		{"SA05", "Etablissement privé non PSPH"}, {"SA15", "Officine"}, {"SA16", "Laboratoire de biologie médicale"},
		{"SA29", "Centre de santé"}, {"SA52", "Etablissement d'hébergement pour personnes âgées"}}
	towns = []struct{ postal, insee, city, dept, deptLabel string }{
		{"75012", "75112", "PARIS", "75", "Paris"}, {"69003", "69383", "LYON", "69", "Rhône"},
		{"13005", "13205", "MARSEILLE", "13", "Bouches-du-Rhône"}, {"42000", "42218", "SAINT-ÉTIENNE", "42", "Loire"},
		{"59000", "59350", "LILLE", "59", "Nord"}, {"35000", "35238", "RENNES", "35", "Ille-et-Vilaine"},
		{"20000", "2A004", "AJACCIO", "2A", "Corse-du-Sud"}, {"20200", "2B033", "BASTIA", "2B", "Haute-Corse"},
		{"20600", "2B033", "BASTIA", "2B", "Haute-Corse"}, {"97400", "97411", "SAINT-DENIS", "974", "La Réunion"},
		{"97200", "97209", "FORT-DE-FRANCE", "972", "Martinique"}, {"98800", "98818", "NOUMÉA", "988", "Nouvelle-Calédonie"},
		{"01000", "01053", "BOURG-EN-BRESSE", "01", "Ain"}, {"64200", "64122", "BIARRITZ", "64", "Pyrénées-Atlantiques"},
		{"31000", "31555", "TOULOUSE", "31", "Haute-Garonne"}, {"67000", "67482", "STRASBOURG", "67", "Bas-Rhin"},
	}
	siteKinds = []string{"CABINET DU DR", "CENTRE HOSPITALIER DE", "PHARMACIE DE LA GARE", "CLINIQUE SAINT-", "MAISON DE SANTÉ DE",
		"SELARL", "CENTRE DE SANTÉ MUNICIPAL", "EHPAD LES TILLEULS"}
	streets = []string{"de la République", "Victor Hugo", "du Général de Gaulle", "des Écoles", "Pasteur", "de l'Église", "Jean Jaurès"}
)

// Write writes an activity file of opt.Lines lines (and the savoir-faire
// file when asked) to w.
func Write(w io.Writer, opt Options) (Stats, error) {
	g := &gen{rng: rand.New(rand.NewPCG(opt.Seed, 0x5eed)), opt: opt}
	var st Stats
	out := newLineWriter(w, opt)
	out.line(ActivityHeader)
	var sf *lineWriter
	if opt.SavoirFaire != nil {
		sf = newLineWriter(opt.SavoirFaire, opt)
		sf.line(SavoirFaireHeader)
	}
	// ADELI-only practitioners (one in ten) first, then RPPS ones: sorted by idNat.
	adeli := int64(opt.Lines / 17)
	var rppsBase int64 = 1000000000
	var adeliNum int64 = 750000000
	for st.Lines < opt.Lines {
		var id string
		if int64(st.Practitioners) < adeli {
			adeliNum += 1 + g.rng.Int64N(40)
			id = ADELI(adeliNum)
		} else {
			rppsBase += 1 + g.rng.Int64N(150)
			id = RPPS(rppsBase)
		}
		n := g.activities()
		if n > opt.Lines-st.Lines {
			n = opt.Lines - st.Lines
		}
		p := g.practitioner(id)
		for i := 0; i < n; i++ {
			out.line(g.activityLine(p, i))
		}
		st.Lines += n
		st.Practitioners++
		if sf != nil && g.rng.IntN(5) == 0 {
			for j := 0; j < 1+g.rng.IntN(2); j++ {
				sf.line(g.savoirFaireLine(p, j))
				st.SavoirFaire++
			}
		}
		if out.err != nil {
			return st, out.err
		}
	}
	if sf != nil {
		if err := sf.flush(); err != nil {
			return st, err
		}
	}
	return st, out.flush()
}

type gen struct {
	rng *rand.Rand
	opt Options
}

type practitioner struct {
	id, family, given      string
	civility, cat, special code
	prof                   code
	specialties            []code
}

// activities draws a practitioner's number of lines: 1.65 on average.
func (g *gen) activities() int {
	switch r := g.rng.IntN(100); {
	case r < 60:
		return 1
	case r < 85:
		return 2
	case r < 95:
		return 3
	default:
		return 4 + g.rng.IntN(3)
	}
}

func (g *gen) pick(list []code) code { return list[g.rng.IntN(len(list))] }

func (g *gen) practitioner(id string) *practitioner {
	p := &practitioner{id: id, family: families[g.rng.IntN(len(families))], given: givens[g.rng.IntN(len(givens))]}
	if g.rng.IntN(4) == 0 { // compound names
		p.family += "-" + families[g.rng.IntN(len(families))]
	}
	total := 0
	for _, pr := range professions {
		total += pr.weight
	}
	r := g.rng.IntN(total)
	for _, pr := range professions {
		if r < pr.weight {
			p.prof = pr.code
			p.special = pr.specialties[g.rng.IntN(len(pr.specialties))]
			p.specialties = pr.specialties
			break
		}
		r -= pr.weight
	}
	p.civility = g.pick(civilities)
	if p.prof.code != "10" && p.civility.code == "DR" {
		p.civility = civilities[1+g.rng.IntN(2)]
	}
	p.cat = g.pick(categories)
	return p
}

func digits(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('0' + rng.IntN(10))
	}
	return string(b)
}

func (g *gen) activityLine(p *practitioner, i int) []string {
	v := make([]string, len(ActivityHeader))
	typ := p.id[:1]
	v[0], v[1], v[2] = typ, p.id[1:], p.id
	v[3], v[4] = p.civility.code, p.civility.label
	v[7], v[8] = p.family, p.given
	v[9], v[10] = p.prof.code, p.prof.label
	v[11], v[12] = p.cat.code, p.cat.label
	if p.special.code != "" {
		v[13], v[14], v[15], v[16] = "S", "Spécialité ordinale", p.special.code, p.special.label
	}
	if g.rng.IntN(20) == 0 && i == 0 { // registered, no place of activity
		return v
	}
	m := g.pick(modes)
	v[17], v[18] = m.code, m.label
	t := towns[g.rng.IntN(len(towns))]
	kind := siteKinds[g.rng.IntN(len(siteKinds))]
	name := kind + " " + t.city
	if strings.HasSuffix(kind, "-") || strings.HasSuffix(kind, "DR") {
		name = kind + " " + p.family
	}
	siren := digits(g.rng, 9)
	v[19], v[20] = siren+digits(g.rng, 5), siren
	if g.rng.IntN(3) == 0 {
		v[21], v[22] = t.dept[:2]+digits(g.rng, 7), t.dept[:2]+digits(g.rng, 7)
	}
	v[23] = "R" + digits(g.rng, 8)
	v[24] = name
	if g.rng.IntN(4) == 0 {
		v[25] = "ESPACE SANTÉ " + t.city
	}
	v[28] = strconv.Itoa(1 + g.rng.IntN(120))
	v[30], v[31] = "R", "Rue"
	v[32] = streets[g.rng.IntN(len(streets))]
	v[34] = t.postal + " " + t.city
	v[35], v[36], v[37] = t.postal, t.insee, t.city
	v[38], v[39] = "99000", "France"
	v[40] = "0" + digits(g.rng, 9)
	if g.rng.IntN(3) == 0 {
		v[42] = "0" + digits(g.rng, 9)
	}
	if g.rng.IntN(3) != 0 { // the department column is often empty
		v[44], v[45] = t.dept, t.deptLabel
	}
	v[46] = "0" + v[19]
	v[47] = "ARS/ONI/ONP"
	s := g.pick(sectors)
	v[48], v[49] = s.code, s.label
	v[52], v[53] = "FON-01", "Titulaire de cabinet"
	v[54], v[55] = "GENR01", "Activité standard de soin ou de pharmacien"
	return v
}

func (g *gen) savoirFaireLine(p *practitioner, j int) []string {
	sp := p.specialties[(j+1)%len(p.specialties)]
	if sp.code == "" {
		sp = code{"CAPA" + strconv.Itoa(10+j), "Capacité d'exercice n°" + strconv.Itoa(j+1)}
	}
	return []string{p.id[:1], p.id[1:], p.id, p.family, p.given, p.prof.code, p.prof.label,
		p.cat.code, p.cat.label, "S", "Spécialité ordinale", sp.code, sp.label}
}

// lineWriter writes published lines in the chosen encoding and line end.
type lineWriter struct {
	w   *bufio.Writer
	enc *encoding.Encoder // nil: UTF-8
	eol string
	err error
}

func newLineWriter(w io.Writer, opt Options) *lineWriter {
	lw := &lineWriter{w: bufio.NewWriterSize(w, 256<<10), eol: "\n"}
	if opt.Windows1252 {
		lw.enc = charmap.Windows1252.NewEncoder()
	}
	if opt.CRLF {
		lw.eol = "\r\n"
	}
	return lw
}

func (lw *lineWriter) line(values []string) {
	if lw.err != nil {
		return
	}
	s := Line(values) + lw.eol
	if lw.enc != nil {
		var err error
		s, err = lw.enc.String(s)
		if err != nil {
			lw.err = err
			return
		}
	}
	_, lw.err = lw.w.WriteString(s)
}

func (lw *lineWriter) flush() error {
	if lw.err != nil {
		return lw.err
	}
	return lw.w.Flush()
}
